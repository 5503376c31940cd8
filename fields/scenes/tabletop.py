"""Procedural posed-image scenes: analytic shapes with solid textures and shading, rendered by
sphere tracing from many cameras, written in the Blender (NeRF-synthetic) format.

No data set can be downloaded, so the project renders its own. The geometry is exact (an
analytic signed distance function), so surface quality is measurable too.

The default scene, ``"tabletop"`` (inside [-1, 1]^3, z up as in Blender):

- a rounded slab (the table) with a two-colour checkerboard, 8 squares a side;
- a sphere with a latitude/longitude pattern and a small specular highlight (view-dependent);
- an upright torus (a thin ring: it occludes and is seen through);
- a rotated box with fine stripes;
- three thin pillars (diameter about two pixels at 128 x 128);
- a capsule bridging two pillars.

Shading: Lambert under a fixed key light plus ambient, with a Blinn-Phong highlight on the
sphere. Pixels are 2 x 2 supersampled (anti-aliased edges, as Blender renders are).
Cameras: on a sphere of radius 4 looking at the origin, field of view 0.69 rad (NeRF-synthetic's
camera_angle_x), elevations from -15 to 75 degrees; train views are a randomised spiral over that
band, test views a circle at 30 degrees (the NeRF-synthetic test path), val views random.
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
from fields.io import cache_root
from fields.render.cameras import Cameras, look_at
from fields.scenes.shading import CHECKER, LIGHT, TABLE_TOP, first_hits, solid_noise

SCENE_VERSION = 1


@dataclass(frozen=True)
class SceneSpec:
    """How a procedural scene is rendered; its hash names the cached folder."""

    name: str = "tabletop"
    resolution: int = 128
    n_train: int = 100
    n_val: int = 8
    n_test: int = 24
    supersample: int = 2
    radius: float = 4.0
    camera_angle_x: float = 0.6911112070083618
    seed: int = 0

    def key(self) -> str:
        blob = json.dumps({**asdict(self), "version": SCENE_VERSION}, sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:10]


# glossy, shiny, chrome: fields.scenes.glossy (reflective objects on a polished or a matte
# table; chrome: a mirror box instead of the sphere)
SCENES = ("tabletop", "glossy", "shiny", "chrome")


# -- signed distances of the primitives, (P, 3) -> (P,) --


PILLARS = ((-0.62, 0.55), (0.05, 0.72), (0.66, -0.05))
PILLAR_TOP = 0.55


def tabletop_sdf(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Signed distance (P,) of the tabletop scene and the id (P,) of the nearest object
    (0 table, 1 sphere, 2 torus, 3 box, 4 pillars, 5 capsule)."""
    from fields.scenes.shapes import box, capsule, sphere, torus

    parts = [
        box((0.95, 0.95, 0.12), (0.0, 0.0, TABLE_TOP - 0.12), rounding=0.04)(p),
        sphere(0.36, (-0.3, -0.3, TABLE_TOP + 0.36))(p),
        # a torus standing upright: its ring lies in the plane y = 0.2 (axis along y)
        torus(0.3, 0.055, (0.32, 0.2, TABLE_TOP + 0.36), axis=1)(p),
        box((0.17, 0.17, 0.17), (0.45, -0.5, TABLE_TOP + 0.17), rounding=0.015, yaw=0.5)(p),
        torch.stack([capsule((x, y, TABLE_TOP), (x, y, PILLAR_TOP), 0.025)(p)
                     for x, y in PILLARS], -1).min(dim=-1).values,
        capsule((PILLARS[0][0], PILLARS[0][1], PILLAR_TOP),
                (PILLARS[1][0], PILLARS[1][1], PILLAR_TOP), 0.05)(p),
    ]
    d = torch.stack(parts, dim=-1)
    dist, obj = d.min(dim=-1)
    return dist, obj


def _palette(rgb: tuple[float, float, float]) -> torch.Tensor:
    return torch.tensor(rgb)


def tabletop_albedo(p: torch.Tensor, obj: torch.Tensor) -> torch.Tensor:
    """Solid-texture colour (P, 3) of surface points p (P, 3) on objects obj (P,)."""
    x, y, z = p.unbind(-1)
    out = torch.zeros_like(p)
    # table: checkerboard, 8 squares across the 1.9-wide top, and a dark rim below the top
    check = ((torch.floor(x * 4.2) + torch.floor(y * 4.2)) % 2).bool()
    table = torch.where(check[:, None], _palette(CHECKER[0]), _palette(CHECKER[1]))
    table = torch.where((z < TABLE_TOP - 0.03)[:, None], _palette((0.25, 0.25, 0.3)), table)
    # sphere: bands of latitude, alternating segments of longitude
    q = p - torch.tensor([-0.3, -0.3, TABLE_TOP + 0.36])
    lat = torch.atan2(q[:, 2], q[:, :2].norm(dim=-1))
    lon = torch.atan2(q[:, 1], q[:, 0])
    band = torch.floor(lat / (math.pi / 8)).long() % 3
    seg = (torch.floor(lon / (math.pi / 6)).long() % 2).bool()
    sphere = torch.stack(
        [_palette((0.9, 0.25, 0.2)), _palette((0.95, 0.85, 0.3)), _palette((0.2, 0.45, 0.85))]
    )[band]
    sphere = torch.where(seg[:, None], sphere, sphere * 0.55 + 0.1)
    # torus: hue around the ring
    qt = p - torch.tensor([0.32, 0.2, TABLE_TOP + 0.36])
    ang = torch.atan2(qt[:, 2], qt[:, 0])
    torus = torch.stack(
        (
            0.5 + 0.4 * torch.cos(ang),
            0.5 + 0.4 * torch.cos(ang + 2.1),
            0.5 + 0.4 * torch.cos(ang + 4.2),
        ),
        -1,
    )
    # box: stripes along its rotated x axis, period 0.06, and a green lid
    qb = p - torch.tensor([0.45, -0.5, 0.0])
    u = math.cos(0.5) * qb[:, 0] + math.sin(0.5) * qb[:, 1]
    stripe = ((torch.floor(u / 0.06)) % 2).bool()
    box = torch.where(stripe[:, None], _palette((0.95, 0.95, 0.92)), _palette((0.15, 0.3, 0.6)))
    box = torch.where((z > TABLE_TOP + 0.33)[:, None], _palette((0.3, 0.7, 0.35)), box)
    pillars = _palette((0.15, 0.15, 0.15)).expand_as(p)
    capsule = torch.where(
        ((torch.floor(x * 12)) % 2).bool()[:, None],
        _palette((0.9, 0.5, 0.1)),
        _palette((0.2, 0.2, 0.2)),
    )
    for i, colour in enumerate((table, sphere, torus, box, pillars, capsule)):
        out = torch.where((obj == i)[:, None], colour, out)
    return out


def shade(
    origins: torch.Tensor, dirs: torch.Tensor, background: torch.Tensor, texture: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Colour (R, 3) and coverage (R,) of rays through the tabletop scene; `texture` in [0, 1]
    mixes three octaves of `solid_noise` into the albedo (features for structure from
    motion)."""
    hit, p, obj, n = first_hits(tabletop_sdf, origins, dirs)
    rgb = background.expand(origins.shape[0], 3).clone()
    if hit.any():
        albedo = tabletop_albedo(p, obj)
        if texture > 0:
            n3 = sum(solid_noise(p, f, k) / 2**k for k, f in enumerate((9.0, 23.0, 61.0)))
            albedo = albedo * ((1 - texture) + texture * (n3 / 1.75 * 1.6))[:, None]
        light = LIGHT.to(p.device)
        lambert = (n @ light).clamp_min(0)
        sky = 0.5 + 0.5 * n[:, 2]  # hemisphere ambient: lit from above
        c = albedo * (0.22 + 0.18 * sky[:, None] + 0.62 * lambert[:, None])
        half = light - dirs[hit]
        half = half / half.norm(dim=-1, keepdim=True)
        spec = (n * half).sum(-1).clamp_min(0) ** 24 * 0.35 * (obj == 1)
        rgb[hit] = (c + spec[:, None]).clamp(0, 1)
    return rgb, hit.float()


def _camera_positions(spec: SceneSpec) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(spec.seed)
    lo, hi = math.radians(-15), math.radians(75)

    def spiral(n: int, jitter: bool) -> torch.Tensor:
        # equal-area band: sin(elevation) uniform in [sin lo, sin hi]; golden-angle azimuths
        k = torch.arange(n, dtype=torch.float32) + 0.5
        s = math.sin(lo) + (math.sin(hi) - math.sin(lo)) * k / n
        az = k * math.pi * (3 - math.sqrt(5))
        if jitter:
            az = az + 0.3 * torch.rand(n, generator=gen)
        el = torch.asin(s)
        return torch.stack((el, az), -1)

    circle = torch.stack(
        (
            torch.full((spec.n_test,), math.radians(30)),
            torch.arange(spec.n_test) * (2 * math.pi / max(spec.n_test, 1)) + 0.1,
        ),
        -1,
    )
    rand = torch.rand(spec.n_val, 2, generator=gen)
    val = torch.stack(
        (
            torch.asin(math.sin(lo) + (math.sin(hi) - math.sin(lo)) * rand[:, 0]),
            rand[:, 1] * 2 * math.pi,
        ),
        -1,
    )
    out = {}
    for name, ea in (("train", spiral(spec.n_train, True)), ("val", val), ("test", circle)):
        el, az = ea.unbind(-1)
        out[name] = spec.radius * torch.stack(
            (torch.cos(el) * torch.cos(az), torch.cos(el) * torch.sin(az), torch.sin(el)), -1
        )
    return out


def render_scene(spec: SceneSpec, progress: Callable[[int, int], None] | None = None,
                 device: str | torch.device | None = None) -> SceneData:
    """Renders the scene's splits (RGB on white plus alpha), without writing anything. The rays
    are traced on `device` (default: the CPU; a GPU makes the 800-pixel scene in seconds); the
    images come back to the CPU."""
    if spec.name not in SCENES:
        raise ValueError(f"unknown procedural scene {spec.name!r}; expected one of {SCENES}")
    res, ss = spec.resolution, spec.supersample
    focal = 0.5 * res / math.tan(0.5 * spec.camera_angle_x)
    white = torch.ones(3)
    if spec.name in ("glossy", "shiny", "chrome"):
        from fields.scenes.glossy import shade as glossy_shade

        def shader(o: torch.Tensor, d: torch.Tensor, bg: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
            return glossy_shade(o, d, bg, matte_table=spec.name == "shiny",
                                chrome=spec.name == "chrome")
    else:
        shader = shade
    positions = _camera_positions(spec)
    total = sum(len(v) for v in positions.values())
    done = 0
    splits = {}
    for name, eyes in positions.items():
        if eyes.shape[0] == 0:
            continue
        c2w = look_at(eyes, torch.zeros(3))
        cams = Cameras(c2w, focal, focal, res / 2, res / 2, res, res)
        fine = Cameras(c2w, focal * ss, focal * ss, res * ss / 2, res * ss / 2, res * ss, res * ss)
        images, alphas = [], []
        for i in range(len(cams)):
            o, d = fine.pixel_rays(i)
            if device is None:
                rgb, cover = shader(o, d, white)
            else:
                with torch.device(device):  # the constants the shaders make, there too
                    rgb, cover = shader(o.to(device), d.to(device), white.to(device))
            rgb = rgb.reshape(res, ss, res, ss, 3).mean(dim=(1, 3)).cpu()
            alpha = cover.reshape(res, ss, res, ss).mean(dim=(1, 3)).cpu()
            images.append(rgb)
            alphas.append(alpha[..., None])
            done += 1
            if progress is not None:
                progress(done, total)
        splits[name] = Split(
            torch.stack(images),
            cams,
            [f"{name}/r_{i}" for i in range(len(cams))],
            torch.stack(alphas),
        )
    return SceneData(
        name=spec.name,
        splits=splits,
        aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]),
        background=white,
        meta={"format": "procedural", "spec": asdict(spec)},
    )


def cache_dir() -> Path:
    """Where generated scenes are kept: $FIELDS_CACHE, else ~/.cache/fields."""
    return cache_root() / "scenes"


def ensure_scene(
    spec: SceneSpec | None = None,
    root: str | os.PathLike | None = None,
    progress: Callable[[int, int], None] | None = None,
    device: str | torch.device | None = None,
) -> Path:
    """The folder of the procedural scene in Blender format, rendering it first when it is not
    there yet (the folder is named after the spec's hash and written atomically: rendered into
    a temporary folder, renamed at the end)."""
    from fields.data.blender import write_blender

    spec = spec or SceneSpec()
    base = Path(root) if root is not None else cache_dir()
    folder = base / f"{spec.name}-{spec.resolution}-{spec.key()}"
    if (folder / "transforms_train.json").is_file():
        return folder
    scene = render_scene(spec, progress, device)
    tmp = base / f".{folder.name}.partial-{os.getpid()}"
    write_blender(tmp, scene)
    (tmp / "scene.json").write_text(
        json.dumps({**asdict(spec), "version": SCENE_VERSION}, indent=2)
    )
    try:
        os.replace(tmp, folder)
    except OSError:  # another process finished first
        if not (folder / "transforms_train.json").is_file():
            raise
    return folder
