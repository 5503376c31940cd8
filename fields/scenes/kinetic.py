"""The built-in dynamic scene: things that move on a table, filmed by fixed cameras
(multi-view video), with exact ground truth at held-out times and views.

``"kinetic"`` (inside [-1, 1]^3, z up; time t in [0, 1]):

- the table of the static scene (a rounded slab with a checkerboard), still;
- a ball that bounces twice while it rolls across the table (its bands move with it);
- a striped box that turns half a revolution about its vertical axis;
- a pendulum: a post, an arm swinging through +-0.6 rad and an orange bob;
- a flat ring that breathes: its radius grows and shrinks (a deformation, not a motion).

``objects="ball"`` keeps only the ball, larger (a small, quick test of motion).

Cameras: `n_cameras` (20, about as many as DyNeRF's rigs) fixed training cameras around the
table (elevations cycling through 15, 30 and 45 degrees) and `n_test_cameras` held-out ones
between them at 30 degrees (inside the rig, as DyNeRF's held-out centre camera), radius 4.
Frames: `n_frames` times ``k / (n_frames - 1)``; every `hold_out_every`-th frame (starting at
the middle of the first run) is a held-out time. "train" holds the training cameras at the
training times, "test" the held-out cameras at the held-out times (novel views at novel times),
"val" the first four training cameras at the held-out times (seen views at novel times).
Shading as the static scene (`fields.scenes.tabletop.shade`'s model): Lambert, hemisphere
ambient, 2 x 2 supersampling. Written in the Blender format with D-NeRF's per-frame ``time``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from fields.data.dataset import SceneData, Split
from fields.render.cameras import Cameras, look_at
from fields.scenes.shading import CHECKER
from fields.scenes.tabletop import LIGHT, TABLE_TOP, cache_dir

KINETIC_VERSION = 2


@dataclass(frozen=True)
class KineticSpec:
    """How the dynamic scene is rendered; its hash names the cached folder."""

    resolution: int = 96
    n_cameras: int = 20
    n_test_cameras: int = 4
    n_frames: int = 24
    hold_out_every: int = 4
    supersample: int = 2
    radius: float = 4.0
    camera_angle_x: float = 0.6911112070083618
    seed: int = 0
    objects: str = "all"

    def key(self) -> str:
        blob = json.dumps({**asdict(self), "version": KINETIC_VERSION}, sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:10]

    def frame_times(self) -> tuple[list[float], list[float]]:
        """(training times, held-out times)."""
        n = self.n_frames
        ts = [k / max(n - 1, 1) for k in range(n)]
        every = self.hold_out_every
        held = [t for k, t in enumerate(ts) if every > 1 and k % every == every // 2]
        return [t for t in ts if t not in held], held


# -- the scene at time t --

BALL_R = 0.2
PIVOT = (-0.1, 0.55, 0.45)
ARM = 0.42
RING = (0.45, -0.45)
BOX = (0.5, 0.35)


def ball_centre(t: float) -> tuple[float, float, float]:
    """The bouncing ball's centre at time t."""
    return (-0.6 + 0.9 * t, -0.3, TABLE_TOP + BALL_R + 0.5 * abs(math.sin(2 * math.pi * t)))


def arm_angle(t: float) -> float:
    """The pendulum's angle from the vertical at time t (radians)."""
    return 0.6 * math.sin(2 * math.pi * t)


def bob_centre(t: float) -> tuple[float, float, float]:
    """The pendulum bob's centre at time t."""
    a = arm_angle(t)
    return (PIVOT[0] + ARM * math.sin(a), PIVOT[1], PIVOT[2] - ARM * math.cos(a))


def box_yaw(t: float) -> float:
    """The turning box's angle about z at time t (radians)."""
    return 0.3 + math.pi * t


def ring_radius(t: float) -> float:
    """The breathing ring's radius at time t."""
    return 0.2 + 0.08 * math.sin(2 * math.pi * t)


def kinetic_sdf(p: torch.Tensor, t: float, objects: str = "all"
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Signed distance (P,) of the scene at time t and the nearest object's id (P,)
    (0 table, 1 ball, 2 box, 3 post and arm, 4 bob, 5 ring); `objects` "ball": the big ball
    alone (id 1)."""
    from fields.scenes.shapes import box, capsule, sphere, torus

    if objects == "ball":
        return sphere(2 * BALL_R, ball_centre(t))(p), torch.ones(p.shape[0], dtype=torch.long)
    bob = bob_centre(t)
    parts = [
        box((0.95, 0.95, 0.12), (0.0, 0.0, TABLE_TOP - 0.12), rounding=0.04)(p),
        sphere(BALL_R, ball_centre(t))(p),
        box((0.15, 0.15, 0.15), (BOX[0], BOX[1], TABLE_TOP + 0.15), rounding=0.015,
            yaw=box_yaw(t))(p),
        torch.minimum(capsule((PIVOT[0], PIVOT[1], TABLE_TOP), PIVOT, 0.03)(p),
                      capsule(PIVOT, bob, 0.018)(p)),
        sphere(0.09, bob)(p),
        torus(ring_radius(t), 0.05, (RING[0], RING[1], TABLE_TOP + 0.05), axis=2)(p),
    ]
    d = torch.stack(parts, dim=-1)
    dist, obj = d.min(dim=-1)
    return dist, obj


def _rgb(*v: float) -> torch.Tensor:
    return torch.tensor(v)


def kinetic_albedo(p: torch.Tensor, obj: torch.Tensor, t: float, radius: float = BALL_R
                   ) -> torch.Tensor:
    """Solid-texture colour (P, 3) of surface points p on objects obj at time t; textures
    move with their objects."""
    x, y, z = p.unbind(-1)
    check = ((torch.floor(x * 4.2) + torch.floor(y * 4.2)) % 2).bool()
    table = torch.where(check[:, None], _rgb(*CHECKER[0]), _rgb(*CHECKER[1]))
    table = torch.where((z < TABLE_TOP - 0.03)[:, None], _rgb(0.25, 0.25, 0.3), table)
    # the ball rolls: its bands turn about the y axis as it travels (angle = distance / r)
    q = p - torch.tensor(ball_centre(t))
    roll = 0.9 * t / radius
    u = math.cos(roll) * q[:, 0] - math.sin(roll) * q[:, 2]
    band = (torch.floor(u / (radius / 2.5)).long() % 2).bool()
    ball = torch.where(band[:, None], _rgb(0.9, 0.25, 0.2), _rgb(0.95, 0.85, 0.3))
    yaw = box_yaw(t)
    qb = p - torch.tensor([BOX[0], BOX[1], 0.0])
    ub = math.cos(yaw) * qb[:, 0] + math.sin(yaw) * qb[:, 1]
    stripe = (torch.floor(ub / 0.075) % 2).bool()
    box = torch.where(stripe[:, None], _rgb(0.95, 0.95, 0.92), _rgb(0.15, 0.3, 0.6))
    box = torch.where((z > TABLE_TOP + 0.29)[:, None], _rgb(0.3, 0.7, 0.35), box)
    post = _rgb(0.2, 0.2, 0.22).expand_as(p)
    bob = _rgb(0.95, 0.55, 0.1).expand_as(p)
    ang = torch.atan2(y - RING[1], x - RING[0])
    ring = torch.stack((0.5 + 0.4 * torch.cos(ang), 0.5 + 0.4 * torch.cos(ang + 2.1),
                        0.5 + 0.4 * torch.cos(ang + 4.2)), -1)
    out = torch.zeros_like(p)
    for i, colour in enumerate((table, ball, box, post, bob, ring)):
        out = torch.where((obj == i)[:, None], colour, out)
    return out


def shade_at(origins: torch.Tensor, dirs: torch.Tensor, background: torch.Tensor, t: float,
             objects: str = "all") -> tuple[torch.Tensor, torch.Tensor]:
    """Colour (R, 3) and coverage (R,) of rays through the scene at time t."""
    from fields.render.sphere_trace import sdf_normals, sphere_trace

    def distance(p: torch.Tensor) -> torch.Tensor:
        return kinetic_sdf(p, t, objects)[0]

    hit_t, hit = sphere_trace(distance, origins, dirs, max_steps=160, epsilon=1e-4, relax=1.0,
                              t_max=8.0, relative=True)
    rgb = background.expand(origins.shape[0], 3).clone()
    if hit.any():
        p = origins[hit] + hit_t[hit, None] * dirs[hit]
        _, obj = kinetic_sdf(p, t, objects)
        n = sdf_normals(distance, p, 1e-4)
        albedo = kinetic_albedo(p, obj, t, 2 * BALL_R if objects == "ball" else BALL_R)
        lambert = (n @ LIGHT).clamp_min(0)
        sky = 0.5 + 0.5 * n[:, 2]
        rgb[hit] = (albedo * (0.22 + 0.18 * sky[:, None] + 0.62 * lambert[:, None])).clamp(0, 1)
    return rgb, hit.float()


def camera_positions(spec: KineticSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """(training camera centres (n_cameras, 3), held-out ones (n_test_cameras, 3))."""
    gen = torch.Generator().manual_seed(spec.seed)
    n = spec.n_cameras
    az = torch.arange(n) * (2 * math.pi / max(n, 1)) + 0.15 * torch.rand(n, generator=gen)
    el = torch.tensor([math.radians((15.0, 30.0, 45.0)[i % 3]) for i in range(n)])
    m = spec.n_test_cameras
    az_t = torch.arange(m) * (2 * math.pi / max(m, 1)) + math.pi / max(n, 1) + 0.4
    el_t = torch.full((m,), math.radians(30.0))

    def xyz(el: torch.Tensor, az: torch.Tensor) -> torch.Tensor:
        return spec.radius * torch.stack(
            (torch.cos(el) * torch.cos(az), torch.cos(el) * torch.sin(az), torch.sin(el)), -1)

    return xyz(el, az), xyz(el_t, az_t)


def render_kinetic(spec: KineticSpec,
                   progress: Callable[[int, int], None] | None = None) -> SceneData:
    """Renders the scene's splits (RGB on white plus alpha, with per-image times), without
    writing anything."""
    res, ss = spec.resolution, spec.supersample
    if res < 8 or spec.n_frames < 2 or spec.n_cameras < 1 or spec.supersample < 1 or \
            spec.objects not in ("all", "ball"):
        raise ValueError(f"KineticSpec: needs resolution >= 8, n_frames >= 2, n_cameras >= 1, "
                         f"supersample >= 1 and objects 'all' or 'ball', got {spec}")
    focal = 0.5 * res / math.tan(0.5 * spec.camera_angle_x)
    white = torch.ones(3)
    train_eyes, test_eyes = camera_positions(spec)
    train_times, held_times = spec.frame_times()
    plan = {"train": (train_eyes, train_times), "val": (train_eyes[:4], held_times),
            "test": (test_eyes, held_times)}
    total = sum(len(e) * len(ts) for e, ts in plan.values())
    done = 0
    rendered: dict[tuple[str, int, int], tuple[torch.Tensor, torch.Tensor]] = {}
    for t in sorted({t for _, ts in plan.values() for t in ts}):
        # every camera that sees time t, traced in one batch
        jobs = [(name, c, k) for name, (eyes, ts) in plan.items() for k, tk in enumerate(ts)
                if tk == t for c in range(len(eyes))]
        rays = []
        for name, c, _ in jobs:
            eyes = plan[name][0]
            c2w = look_at(eyes[c : c + 1], torch.tensor([0.0, 0.0, -0.2]))
            fine = Cameras(c2w, focal * ss, focal * ss, res * ss / 2, res * ss / 2, res * ss,
                           res * ss)
            rays.append(fine.pixel_rays(0))
        rgb, cover = shade_at(torch.cat([o for o, _ in rays]), torch.cat([d for _, d in rays]),
                              white, t, spec.objects)
        per = (res * ss) ** 2
        for j, (name, c, k) in enumerate(jobs):
            img = rgb[j * per : (j + 1) * per].reshape(res, ss, res, ss, 3).mean(dim=(1, 3))
            a = cover[j * per : (j + 1) * per].reshape(res, ss, res, ss).mean(dim=(1, 3))
            rendered[(name, c, k)] = (img, a[..., None])
        done += len(jobs)
        if progress is not None:
            progress(done, total)
    splits = {}
    for name, (eyes, times) in plan.items():
        if not times or len(eyes) == 0:
            continue
        c2w = look_at(eyes, torch.tensor([0.0, 0.0, -0.2]))
        keys = [(name, c, k) for k in range(len(times)) for c in range(len(eyes))]
        cams = Cameras(c2w[[c for _, c, _ in keys]], focal, focal, res / 2, res / 2, res, res)
        splits[name] = Split(
            torch.stack([rendered[key][0] for key in keys]), cams,
            [f"{name}/cam{c:02d}_f{k:03d}" for _, c, k in keys],
            torch.stack([rendered[key][1] for key in keys]),
            times=torch.tensor([times[k] for _, _, k in keys]))
    return SceneData(
        name="kinetic", splits=splits, aabb=torch.tensor([[-1.0] * 3, [1.0] * 3]),
        background=white, meta={"format": "procedural", "spec": asdict(spec)},
    )


def ensure_kinetic(spec: KineticSpec | None = None, root: str | os.PathLike | None = None,
                   progress: Callable[[int, int], None] | None = None) -> Path:
    """The folder of the dynamic scene in Blender format (with per-frame ``time``), rendering
    it first when it is not there yet (written into a temporary folder, renamed at the end)."""
    from fields.data.blender import write_blender

    spec = spec or KineticSpec()
    base = Path(root) if root is not None else cache_dir()
    folder = base / f"kinetic-{spec.resolution}-{spec.key()}"
    if (folder / "transforms_train.json").is_file():
        return folder
    scene = render_kinetic(spec, progress)
    tmp = base / f".{folder.name}.partial-{os.getpid()}"
    write_blender(tmp, scene)
    (tmp / "scene.json").write_text(
        json.dumps({**asdict(spec), "version": KINETIC_VERSION}, indent=2))
    try:
        os.replace(tmp, folder)
    except OSError:  # another process finished first
        if not (folder / "transforms_train.json").is_file():
            raise
    return folder
