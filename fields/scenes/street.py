"""Synthetic lidar scans of a street scene with exact ground-truth scene flow: the built-in
benchmark data of the scene-flow feature (``fields fit flow`` with no arguments fits the default
pair, ``make_flow_pair()``).

No scene-flow data set can be downloaded, so the project makes its own. Every object moves by a
closed-form motion (rigid poses, a hinged figure, an invertible non-rigid deformation), so the
flow of each lidar point is exact: its position at the next time computed from the motion, not
found by nearest neighbours.

Conventions: metres, z up. By default every cloud is in the coordinates of its own lidar pose
(``frame="sensor"``: x forward, origin at the sensor), as KITTI and Argoverse scene-flow data
are, so the flow includes the ego-motion; with ``frame="world"`` all clouds of a pair or
sequence are in one world frame (ego-motion compensated: static points have zero flow). Either
way the sensor moves between frames, so two frames sample the static world differently. Time
is counted in frames (10 Hz lidar); the scene is checked to be free of interpenetration, with
every object in view, for frames ``0 .. N_FRAMES - 1``.

The scene (about 70 m x 40 m; the sensor drives along the x axis in the lane y = -1.75):

- ground plane z = 0 (dropped by default: points with z < 0.3 m, as the KITTI / Argoverse
  scene-flow protocol does);
- static structure: six buildings (boxes), a garden wall, a kiosk, six lamp poles, two trees
  (trunk capsule + spherical crown), a plinth, a parked car;
- four moving cars (rounded boxes 4.5 x 1.8 x 1.5 m, 0.2 m ground clearance), each on a
  constant-speed, constant-yaw-rate arc (0.3 to 1 m per frame): one ahead in the sensor's lane,
  one oncoming, one turning in a parking lot, one following the sensor;
- a walking pedestrian, an articulated figure of seven rigid parts: torso + head (the root, it
  translates along the sidewalk and bobs), two thighs hinged at the hips, two shins hinged at the
  knees, two arms hinged at the shoulders. A child's pose is its parent's pose composed with its
  hinge rotation (pitch about the part's y axis). Parts are capsules and boxes separated by 2 cm
  gaps at the joints, so they never interpenetrate whatever the hinge angles;
- a twisting sculpture on the plinth: a rounded box under a time-varying anisotropic scaling and
  a twist about its vertical axis by an angle proportional to height. The map has a closed-form
  inverse, so the flow is ``forward(t + 1)(inverse(t)(x))``; it is sphere traced with the
  canonical SDF at the inverse-mapped point divided by a Lipschitz bound of the inverse map
  (a conservative distance bound with the exact zero set).

Labels (``LABELS[k]`` names label k): 0 static background (ground, buildings, poles, trees,
plinth, parked car), 1 car ahead, 2 oncoming car, 3 turning car, 4 following car, 5 pedestrian
torso + head, 6 left thigh, 7 left shin, 8 right thigh, 9 right shin, 10 left arm, 11 right arm,
12 sculpture (non-rigid). Labels 1-11 move rigidly between two frames, 12 does not.

Lidar: a spinning lidar 1.73 m above the ground with ``n_beams`` elevations spread evenly over
[-24.8, +2] degrees (an HDL-64's field of view) and ``n_azimuth`` steps per turn, range 35 m; the
first surface along each ray is found by sphere tracing (`fields.render.sphere_trace`; the
ground plane analytically), then Gaussian range noise is added. Per frame, the azimuth start
has a random offset and the cloud is subsampled at random to ``n_points``. The seed fixes the
sampling and also varies the motion a little (speeds, yaw rates, gait and sculpture phases)
within the ranges checked to be safe; frame k of a seed is the same cloud in `make_flow_pair` and
`make_flow_sequence`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fields.io import save_npy_atomic
from fields.render.sphere_trace import sphere_trace

LABELS = (
    "static",
    "car_ahead",
    "car_oncoming",
    "car_turning",
    "car_following",
    "pedestrian_torso",
    "pedestrian_left_thigh",
    "pedestrian_left_shin",
    "pedestrian_right_thigh",
    "pedestrian_right_shin",
    "pedestrian_left_arm",
    "pedestrian_right_arm",
    "sculpture",
)
N_LABELS = len(LABELS)
RIGID_LABELS = tuple(range(1, 12))
NONRIGID_LABELS = (12,)
N_FRAMES = 20  # frames 0 .. N_FRAMES - 1 are checked (no interpenetration, all objects in view)

SENSOR_HEIGHT = 1.73
SENSOR_START = (0.0, -1.75)
SENSOR_SPEED = 0.5  # metres per frame
SENSOR_YAW_RATE = 0.004  # radians per frame
ELEVATION_DEG = (-24.8, 2.0)
MAX_RANGE = 35.0
GROUND_HEIGHT = 0.3  # points below this are ground in the KITTI / Argoverse protocol
HIT_EPS = 2e-4  # sphere tracing stops this close to a surface (metres)
MAX_STEPS = 256
CHUNK = 16384  # rays traced at once

Pose = tuple[np.ndarray, np.ndarray]  # (R (3, 3) world-from-local, c (3,) origin), float64


def _rot_z(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _rot_y(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _compose(parent: Pose, rot: np.ndarray, offset: tuple[float, ...]) -> Pose:
    """The pose of a child whose frame sits at `offset` in the parent frame, rotated by `rot`."""
    r, c = parent
    return r @ rot, r @ np.asarray(offset, dtype=np.float64) + c


def _arc_pose(
    p0: tuple[float, float], yaw0: float, speed: float, yaw_rate: float, t: float, z: float = 0.0
) -> Pose:
    """Constant speed and yaw rate (a unicycle on a circular arc), closed form."""
    yaw = yaw0 + yaw_rate * t
    if abs(yaw_rate) < 1e-12:
        x = p0[0] + speed * t * math.cos(yaw0)
        y = p0[1] + speed * t * math.sin(yaw0)
    else:
        k = speed / yaw_rate
        x = p0[0] + k * (math.sin(yaw) - math.sin(yaw0))
        y = p0[1] + k * (math.cos(yaw0) - math.cos(yaw))
    return _rot_z(yaw), np.array([x, y, z])


@dataclass
class _Rigid:
    """A rigid object (or the static background): primitives in its local frame and a pose."""

    label: int
    pose: Callable[[float], Pose]
    boxes: list[tuple[tuple[float, ...], tuple[float, ...], float, float]] = field(
        default_factory=list
    )  # (centre, half extents, rounding radius, yaw about the local z axis)
    capsules: list[tuple[tuple[float, ...], tuple[float, ...], float]] = field(
        default_factory=list
    )  # (end a, end b, radius)
    spheres: list[tuple[tuple[float, ...], float]] = field(default_factory=list)


def _static_pose(t: float) -> Pose:
    return np.eye(3), np.zeros(3)


CAR_HALF = (2.25, 0.9, 0.75)  # 4.5 x 1.8 x 1.5 m
CAR_CLEARANCE = 0.2
CAR_ROUND = 0.25


def _car_box(yaw: float = 0.0) -> tuple[tuple[float, ...], tuple[float, ...], float, float]:
    return (0.0, 0.0, CAR_CLEARANCE + CAR_HALF[2]), CAR_HALF, CAR_ROUND, yaw


# pedestrian dimensions (metres); local frame: origin at the pelvis, x forward, y left, z up
PED_GAP = 0.02
THIGH_LEN, THIGH_R = 0.40, 0.075
SHIN_LEN, SHIN_R = 0.33, 0.06
ARM_LEN, ARM_R = 0.7, 0.05
HIP_Y = 0.11
TORSO_HALF = (0.11, 0.2, 0.28)
TORSO_Z = THIGH_R + PED_GAP + TORSO_HALF[2]  # torso bottom one gap above the hip balls
SHOULDER = (0.0, TORSO_HALF[1] + ARM_R + PED_GAP, 0.55)
PELVIS_Z = 0.99


@dataclass
class _Pedestrian:
    """Walking figure: root translation plus a sinusoidal gait (hinge angles in radians)."""

    start: tuple[float, float]
    speed: float  # metres per frame along +x
    phase: float
    omega: float = 2 * math.pi / 10  # one stride cycle per second
    hip_amp: float = 0.4
    knee_amp: float = 0.9
    arm_amp: float = 0.35
    bob: float = 0.015

    def poses(self, t: float) -> dict[int, Pose]:
        u = self.omega * t + self.phase
        root = (
            np.eye(3),
            np.array(
                [
                    self.start[0] + self.speed * t,
                    self.start[1],
                    PELVIS_Z + self.bob * math.cos(2 * u),
                ]
            ),
        )
        out = {5: root}
        for side, (thigh, shin, arm) in ((1.0, (6, 7, 10)), (-1.0, (8, 9, 11))):
            swing = side * self.hip_amp * math.sin(u)  # forward swing of the thigh
            knee = self.knee_amp * 0.5 * (1 + math.sin(u + side * 1.2 + 1.0))  # flexion >= 0
            # Ry(-a) swings the -z axis forward (+x); Ry(+b) swings it backward
            out[thigh] = _compose(root, _rot_y(-swing), (0.0, side * HIP_Y, 0.0))
            out[shin] = _compose(out[thigh], _rot_y(knee), (0.0, 0.0, -THIGH_LEN))
            out[arm] = _compose(
                root,
                _rot_y(side * self.arm_amp * math.sin(u)),
                (0.0, side * SHOULDER[1], SHOULDER[2]),
            )
        return out

    def parts(self) -> list[_Rigid]:
        def pose_of(label: int) -> Callable[[float], Pose]:
            return lambda t: self.poses(t)[label]

        shin_a = -(THIGH_R + SHIN_R + PED_GAP)
        parts = [
            _Rigid(
                5,
                pose_of(5),
                boxes=[((0.0, 0.0, TORSO_Z), TORSO_HALF, 0.06, 0.0)],
                spheres=[((0.0, 0.0, TORSO_Z + TORSO_HALF[2] + 0.075), 0.1)],
            ),
        ]
        for thigh, shin, arm in ((6, 7, 10), (8, 9, 11)):
            parts += [
                _Rigid(
                    thigh,
                    pose_of(thigh),
                    capsules=[((0.0, 0.0, 0.0), (0.0, 0.0, -THIGH_LEN), THIGH_R)],
                ),
                _Rigid(
                    shin,
                    pose_of(shin),
                    capsules=[((0.0, 0.0, shin_a), (0.0, 0.0, shin_a - SHIN_LEN), SHIN_R)],
                ),
                _Rigid(
                    arm, pose_of(arm), capsules=[((0.0, 0.0, 0.0), (0.0, 0.0, -ARM_LEN), ARM_R)]
                ),
            ]
        return sorted(parts, key=lambda r: r.label)


@dataclass
class _Sculpture:
    """A rounded box (canonical frame: base at the origin, height 2 half[2]) scaled by
    diag(a, b, h)(t), then twisted about the vertical axis by kappa(t) * height, placed at base.
    forward(t): q -> base + Twist_kappa(S q); inverse(t): x -> S^-1 Twist_-kappa(x - base)."""

    base: tuple[float, float, float]
    phases: tuple[float, float, float]
    half: tuple[float, float, float] = (0.45, 0.25, 0.8)
    rounding: float = 0.08
    margin: float = 0.3  # the Lipschitz bound holds in a cylinder this much wider than the shape

    def params(self, t: float) -> tuple[float, float, float, float]:
        p0, p1, p2 = self.phases
        s = math.sin(0.5 * t + p0)
        a, b = 1 + 0.2 * s, 1 - 0.2 * s
        h = 1 + 0.12 * math.sin(0.4 * t + p1)
        kappa = 0.9 * math.sin(0.45 * t + p2)  # twist, radians per metre of height
        return a, b, h, kappa

    def bounds(self, t: float) -> tuple[float, float, float]:
        """Radius and height of a vertical cylinder (on the base) holding the shape at t, and
        the Lipschitz constant of the inverse map inside the cylinder widened by `margin`."""
        a, b, h, kappa = self.params(t)
        radius = math.hypot(a * self.half[0], b * self.half[1])
        height = 2 * self.half[2] * h
        shear = abs(kappa) * (radius + self.margin)
        lip = 0.5 * (shear + math.sqrt(shear * shear + 4.0)) / min(a, b, h)
        return radius, height, lip

    def inverse(self, x: np.ndarray, t: float) -> np.ndarray:
        a, b, h, kappa = self.params(t)
        v = x - np.asarray(self.base)
        ang = -kappa * v[:, 2]
        c, s = np.cos(ang), np.sin(ang)
        return np.stack(
            ((c * v[:, 0] - s * v[:, 1]) / a, (s * v[:, 0] + c * v[:, 1]) / b, v[:, 2] / h), -1
        )

    def forward(self, q: np.ndarray, t: float) -> np.ndarray:
        a, b, h, kappa = self.params(t)
        u = q * np.array([a, b, h])
        ang = kappa * u[:, 2]
        c, s = np.cos(ang), np.sin(ang)
        out = np.stack((c * u[:, 0] - s * u[:, 1], s * u[:, 0] + c * u[:, 1], u[:, 2]), -1)
        return out + np.asarray(self.base)

    def sdf(self, p: torch.Tensor, t: float) -> torch.Tensor:
        a, b, h, kappa = self.params(t)
        radius, height, lip = self.bounds(t)
        v = p - torch.tensor(self.base, dtype=p.dtype)
        m = self.margin
        out = _sd_vcylinder(v, radius, 0.0, height)
        near = (_sd_vcylinder(v, radius + m, -m, height + m) <= 0).nonzero().squeeze(1)
        if near.numel():
            # inside the wide cylinder: the canonical SDF at the inverse-mapped point over the
            # Lipschitz bound; outside it the distance to the narrow one is a valid bound
            w = v[near]
            ang = -kappa * w[:, 2]
            c, s = torch.cos(ang), torch.sin(ang)
            q = torch.stack(
                (
                    (c * w[:, 0] - s * w[:, 1]) / a,
                    (s * w[:, 0] + c * w[:, 1]) / b,
                    w[:, 2] / h - self.half[2],
                ),
                -1,
            )
            d = q.abs() - torch.tensor(self.half, dtype=p.dtype) + self.rounding
            canon = d.clamp_min(0).norm(dim=-1) + d.amax(dim=-1).clamp_max(0) - self.rounding
            out[near] = canon / lip
        return out


def _sd_vcylinder(v: torch.Tensor, r: float, z0: float, z1: float) -> torch.Tensor:
    """Exact SDF of the vertical capped cylinder |v_xy| <= r, z0 <= v_z <= z1."""
    dr = v[:, :2].norm(dim=-1) - r
    dz = (v[:, 2] - 0.5 * (z0 + z1)).abs() - 0.5 * (z1 - z0)
    d = torch.stack((dr, dz), -1)
    return d.clamp_min(0).norm(dim=-1) + d.amax(dim=-1).clamp_max(0)


def _rounded_box(q_abs: torch.Tensor, core: torch.Tensor, rounding: torch.Tensor) -> torch.Tensor:
    """Rounded-box SDF from |local coordinates| (..., 3), overwritten; core = half - rounding."""
    d = q_abs.sub_(core)
    inside = d.amax(dim=-1).clamp_max_(0)
    return d.clamp_min_(0).square_().sum(-1).sqrt_().add_(inside).sub_(rounding)


@dataclass
class _Prims:
    """World-space primitives of the scene at one time, as torch tensors, in four groups (the
    cheap special cases apart): axis-aligned rounded boxes, rotated rounded boxes, vertical
    capsules (spheres being vertical capsules of zero length), other capsules; then the
    sculpture."""

    aabb_c: torch.Tensor  # (A, 3) centres
    aabb_core: torch.Tensor  # (A, 3) half extents minus rounding
    aabb_round: torch.Tensor  # (A,)
    box_c: torch.Tensor  # (B, 3)
    box_r: torch.Tensor  # (B, 3, 3) world-from-box rotations
    box_core: torch.Tensor  # (B, 3)
    box_round: torch.Tensor  # (B,)
    vcap_xy: torch.Tensor  # (V, 2) axis position
    vcap_z: torch.Tensor  # (V, 2) z range of the axis
    vcap_r: torch.Tensor  # (V,)
    cap_a: torch.Tensor  # (C, 3)
    cap_ba: torch.Tensor  # (C, 3)
    cap_inv: torch.Tensor  # (C,) 1 / |b - a|^2
    cap_r: torch.Tensor  # (C,)
    labels: torch.Tensor  # (A + B + V + C + 1,) label of each primitive, the sculpture last
    time: float

    def distances(self, p: torch.Tensor, sculpture: _Sculpture) -> torch.Tensor:
        """(P, A + B + V + C + 1) distance bounds of points p (P, 3) to every primitive."""
        aabb = _rounded_box((p[:, None, :] - self.aabb_c).abs_(), self.aabb_core, self.aabb_round)
        q = torch.einsum("pbj,bji->pbi", p[:, None, :] - self.box_c, self.box_r)
        box = _rounded_box(q.abs_(), self.box_core, self.box_round)
        dxy = (p[:, None, :2] - self.vcap_xy).square().sum(-1)
        z = p[:, 2:]
        dz = z - z.clamp(self.vcap_z[:, 0], self.vcap_z[:, 1])
        vcap = (dxy + dz.square()).sqrt() - self.vcap_r
        pa = p[:, None, :] - self.cap_a
        k = ((pa * self.cap_ba).sum(-1) * self.cap_inv).clamp(0, 1)
        cap = (pa - k[..., None] * self.cap_ba).norm(dim=-1) - self.cap_r
        return torch.cat((aabb, box, vcap, cap, sculpture.sdf(p, self.time)[:, None]), dim=1)


class FlowScene:
    """The street scene and its motion for one seed: SDFs, labels, exact motion, lidar scans."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0x5CE7E]))
        speed = rng.uniform(0.9, 1.05, size=4)
        turn = rng.uniform(0.5, 1.0, size=4)
        gait_phase = float(rng.uniform(0, 2 * math.pi))
        sculpt_phases = tuple(float(x) for x in rng.uniform(0, 2 * math.pi, size=3))

        static = _Rigid(0, _static_pose)
        for x0, x1, y0, y1, height in (
            (-24.0, -6.0, -20.0, -9.0, 8.0),  # right side, behind
            (10.0, 30.0, -19.0, -10.0, 10.0),  # right side, ahead
            (13.0, 32.0, 8.0, 20.0, 12.0),  # left side, ahead
            (-26.0, -8.0, 9.0, 19.0, 7.0),  # left side, behind
            (36.0, 46.0, -20.0, 20.0, 9.0),  # across the far end of the street
            (-40.0, -30.0, -20.0, 20.0, 9.0),  # across the near end
            (-5.0, 9.0, -9.6, -9.3, 1.2),  # garden wall
            (-12.0, -9.5, 5.0, 6.8, 2.6),  # kiosk
            (5.3, 6.7, 4.9, 6.3, 0.35),  # plinth of the sculpture
        ):
            static.boxes.append(
                (
                    ((x0 + x1) / 2, (y0 + y1) / 2, height / 2),
                    ((x1 - x0) / 2, (y1 - y0) / 2, height / 2),
                    0.05,
                    0.0,
                )
            )
        centre, half, rounding, yaw = _car_box(0.03)
        static.boxes.append(((-4.0, -4.8, centre[2]), half, rounding, yaw))  # parked car
        for x, y in (
            (-14.0, -8.0),
            (0.0, -8.0),
            (14.0, -8.0),
            (-6.0, 4.2),
            (8.0, 4.2),
            (20.0, 4.2),
        ):
            static.capsules.append(((x, y, -0.5), (x, y, 6.0), 0.12))  # lamp poles
        for x, y in ((-16.0, 5.2), (26.0, -7.5)):
            static.capsules.append(((x, y, -0.5), (x, y, 3.0), 0.22))  # trunk
            static.spheres.append(((x, y, 4.3), 1.6))  # crown

        cars = (  # (start, heading, metres per frame, radians per frame)
            ((9.0, -1.75), 0.0, 0.8, -0.003),  # ahead in the sensor's lane
            ((22.0, 1.75), math.pi, 0.95, -0.002),  # oncoming
            ((2.0, 9.2), 0.3, 0.3, 0.04),  # turning in the parking lot
            ((-10.0, -1.75), 0.0, 0.6, 0.002),  # following the sensor
        )
        self.objects: list[_Rigid] = [static]
        for i, (p0, yaw0, v, w) in enumerate(cars):
            v, w = v * speed[i], w * turn[i]

            def pose(t: float, p0=p0, yaw0=yaw0, v=v, w=w) -> Pose:
                return _arc_pose(p0, yaw0, v, w, t)

            self.objects.append(_Rigid(i + 1, pose, boxes=[_car_box()]))
        self.pedestrian = _Pedestrian(start=(3.0, -6.8), speed=0.2, phase=gait_phase)
        self.objects += self.pedestrian.parts()
        self.sculpture = _Sculpture(base=(6.0, 5.6, 0.38), phases=sculpt_phases)
        assert [o.label for o in self.objects] == list(range(len(self.objects)))
        self._cache: dict[tuple[float, torch.dtype], _Prims] = {}

    # -- geometry --

    def primitives(self, time: float, dtype: torch.dtype = torch.float64) -> _Prims:
        """The world-space primitives at `time` (cached)."""
        key = (float(time), dtype)
        if key not in self._cache:
            self._cache[key] = self._build(float(time), dtype)
        return self._cache[key]

    def _build(self, t: float, dtype: torch.dtype) -> _Prims:
        groups: dict[str, list[tuple]] = {"aabb": [], "box": [], "vcap": [], "cap": []}
        for obj in self.objects:
            rot, c = obj.pose(t)
            for centre, half, rounding, yaw in obj.boxes:
                r = rot @ _rot_z(yaw)
                core = np.asarray(half) - rounding
                if np.array_equal(r, np.eye(3)):
                    groups["aabb"].append((rot @ np.asarray(centre) + c, core, rounding, obj.label))
                else:
                    groups["box"].append(
                        (rot @ np.asarray(centre) + c, r, core, rounding, obj.label)
                    )
            ends = [(a, b, r) for a, b, r in obj.capsules] + [(c0, c0, r) for c0, r in obj.spheres]
            for a, b, r in ends:
                a, b = rot @ np.asarray(a) + c, rot @ np.asarray(b) + c
                if np.array_equal(a[:2], b[:2]):
                    z0, z1 = sorted((a[2], b[2]))
                    groups["vcap"].append((a[:2], (z0, z1), r, obj.label))
                else:
                    groups["cap"].append((a, b - a, r, obj.label))

        def cols(name: str, shapes: tuple[tuple[int, ...], ...]) -> list[torch.Tensor]:
            rows = groups[name]
            out = []
            for i, shape in enumerate(shapes):
                x = np.asarray([row[i] for row in rows], dtype=np.float64).reshape(-1, *shape)
                out.append(torch.tensor(x, dtype=dtype))
            return out

        aabb_c, aabb_core, aabb_round = cols("aabb", ((3,), (3,), ()))
        box_c, box_r, box_core, box_round = cols("box", ((3,), (3, 3), (3,), ()))
        vcap_xy, vcap_z, vcap_r = cols("vcap", ((2,), (2,), ()))
        cap_a, cap_ba, cap_r = cols("cap", ((3,), (3,), ()))
        labels = [row[-1] for name in ("aabb", "box", "vcap", "cap") for row in groups[name]]
        return _Prims(
            aabb_c,
            aabb_core,
            aabb_round,
            box_c,
            box_r,
            box_core,
            box_round,
            vcap_xy,
            vcap_z,
            vcap_r,
            cap_a,
            cap_ba,
            1.0 / (cap_ba * cap_ba).sum(-1),
            cap_r,
            labels=torch.tensor([*labels, NONRIGID_LABELS[0]]),
            time=t,
        )

    def label_sdf(self, points: np.ndarray, time: float) -> np.ndarray:
        """(P, N_LABELS) signed distance bound of points (P, 3) to each labelled object at
        `time` (label 0 includes the ground plane). Exact for the rigid objects; for the
        sculpture a conservative bound with the exact zero set."""
        p = torch.as_tensor(np.asarray(points, dtype=np.float64).reshape(-1, 3))
        prims = self.primitives(time, torch.float64)
        d = prims.distances(p, self.sculpture)
        out = torch.full((p.shape[0], N_LABELS), math.inf, dtype=torch.float64)
        out.scatter_reduce_(1, prims.labels.expand_as(d), d, "amin")
        out[:, 0] = torch.minimum(out[:, 0], p[:, 2])
        return out.numpy()

    def sdf(self, points: np.ndarray, time: float) -> np.ndarray:
        """(P,) signed distance (bound) of the whole scene, ground included, at `time`."""
        return self.label_sdf(points, time).min(axis=1)

    def labels(self, points: np.ndarray, time: float) -> np.ndarray:
        """(P,) int32 label of the nearest object to each point at `time`."""
        return self.label_sdf(points, time).argmin(axis=1).astype(np.int32)

    # -- motion --

    def move(self, points: np.ndarray, labels: np.ndarray, t0: float, t1: float) -> np.ndarray:
        """(P, 3) float64 exact positions at t1 of points (P, 3) attached to objects `labels`
        at t0 (rigid objects: R1 R0^T (p - c0) + c1; the sculpture: forward(t1)(inverse(t0)))."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        labels = np.asarray(labels).reshape(-1)
        out = p.copy()
        for obj in self.objects[1:]:
            sel = labels == obj.label
            if sel.any():
                r0, c0 = obj.pose(t0)
                r1, c1 = obj.pose(t1)
                out[sel] = (p[sel] - c0) @ (r1 @ r0.T).T + c1
        sel = labels == NONRIGID_LABELS[0]
        if sel.any():
            out[sel] = self.sculpture.forward(self.sculpture.inverse(p[sel], t0), t1)
        return out

    def flow(self, points: np.ndarray, labels: np.ndarray, time: float) -> np.ndarray:
        """(P, 3) float64 exact flow from `time` to `time + 1` of points with `labels`."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        return self.move(p, labels, time, time + 1) - p

    def rigid_motion(self, label: int, time: float) -> tuple[np.ndarray, np.ndarray]:
        """(R, t) with p(time + 1) = R p(time) + t for a rigid label (identity for 0)."""
        if label == 0:
            return np.eye(3), np.zeros(3)
        if label not in RIGID_LABELS:
            raise ValueError(f"label {label} is not rigid; rigid labels are 0..11")
        r0, c0 = self.objects[label].pose(time)
        r1, c1 = self.objects[label].pose(time + 1)
        rot = r1 @ r0.T
        return rot, c1 - rot @ c0

    # -- lidar --

    def sensor_pose(self, time: float) -> Pose:
        """The lidar's pose at `time` (yaw rotation, origin)."""
        return _arc_pose(SENSOR_START, 0.0, SENSOR_SPEED, SENSOR_YAW_RATE, time, SENSOR_HEIGHT)

    def trace(
        self, origin: np.ndarray, dirs: torch.Tensor, time: float, max_range: float = MAX_RANGE
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """First hits of rays from `origin` (3,) along unit `dirs` (R, 3) at `time`: range t
        (R,) and kind (R,) int8 (0 no hit within max_range, 1 object, 2 ground). Sphere tracing
        by `fields.render.sphere_trace` (in the dtype of `dirs`, CHUNK rays at a time) on the
        scene's distance bound; the ground plane is intersected analytically and ends the
        tracing of a ray that reaches it (the ray's `t_max`)."""
        dtype = dirs.dtype
        prims = self.primitives(time, dtype)
        o = torch.as_tensor(np.asarray(origin), dtype=dtype)
        n = dirs.shape[0]
        t_out = torch.zeros(n, dtype=dtype)
        kind = torch.zeros(n, dtype=torch.int8)
        down = dirs[:, 2] < 0
        t_ground = torch.where(down, -o[2] / dirs[:, 2].clamp_max(-1e-12), math.inf)
        t_lim = t_ground.clamp_max(max_range)
        # a ray ends once t >= t_lim; sphere_trace ends it once t > t_max: the float below
        t_max = torch.nextafter(t_lim, torch.full_like(t_lim, -math.inf))

        def distance(p: torch.Tensor) -> torch.Tensor:
            # a bound below HIT_EPS is a hit, a negative one (inside) included: clamped at 0
            return prims.distances(p, self.sculpture).amin(dim=1).clamp_min(0.0)

        for start in range(0, n, CHUNK):
            rays = slice(start, min(start + CHUNK, n))
            d = dirs[rays]
            t, hit = sphere_trace(distance, o.expand_as(d), d, max_steps=MAX_STEPS,
                                  epsilon=HIT_EPS, relax=1.0, t_max=t_max[rays])
            ground = ~hit & (t > t_max[rays]) & (t_ground[rays] <= max_range)
            t_out[rays] = torch.where(hit, t, torch.where(ground, t_ground[rays], 0.0))
            kind[rays] = torch.where(hit, 1, torch.where(ground, 2, 0)).to(torch.int8)
        return t_out, kind

    def scan(
        self,
        time: int,
        rng: np.random.Generator,
        n_beams: int = 64,
        n_azimuth: int = 1024,
        noise: float = 0.01,
    ) -> tuple[np.ndarray, np.ndarray]:
        """One lidar sweep at `time`: points (H, 3) float64 in the world frame (with range
        noise) and their labels (H,) int32 (found at the noise-free hit points)."""
        rot, origin = self.sensor_pose(time)
        yaw = math.atan2(rot[1, 0], rot[0, 0])
        step = 2 * math.pi / n_azimuth
        az = yaw + rng.uniform(0.0, step) + step * np.arange(n_azimuth)
        el = np.radians(np.linspace(*ELEVATION_DEG, n_beams))
        el, az = np.meshgrid(el, az, indexing="ij")
        dirs = np.stack((np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)), -1)
        dirs = dirs.reshape(-1, 3)
        t, kind = self.trace(origin, torch.tensor(dirs, dtype=torch.float32), time)
        hit = kind.numpy() > 0
        t_hit = t.numpy()[hit].astype(np.float64)
        d_hit = dirs[hit]
        clean = origin + t_hit[:, None] * d_hit
        labels = np.zeros(len(t_hit), dtype=np.int32)
        obj = kind.numpy()[hit] == 1
        if obj.any():
            labels[obj] = self.labels(clean[obj], time)
        t_noisy = t_hit + noise * rng.standard_normal(len(t_hit)) if noise > 0 else t_hit
        return origin + t_noisy[:, None] * d_hit, labels


def scene_sdf(points: np.ndarray, time: float, seed: int = 0) -> np.ndarray:
    """(P,) signed distance (bound) of the seed's scene at `time` (frames) at points (P, 3),
    ground plane included; zero on every surface."""
    return FlowScene(seed).sdf(points, time)


@dataclass
class FlowPair:
    """Two lidar frames and the exact flow of the first one's points (metres; the frame is
    meta["frame"], see `make_flow_pair`)."""

    source: np.ndarray  # (N, 3) float32, frame t
    target: np.ndarray  # (M, 3) float32, frame t + 1
    flow: np.ndarray  # (N, 3) float32, exact flow of the source points to time t + 1
    labels: np.ndarray  # (N,) int32 object label of each source point (see LABELS)
    target_labels: np.ndarray  # (M,) int32
    name: str
    meta: dict = field(default_factory=dict)

    def save(self, folder: str | os.PathLike) -> None:
        """Writes source.npy, target.npy, flow.npy, labels.npy and target_labels.npy (each
        atomically) into `folder`."""
        for key in ("source", "target", "flow", "labels", "target_labels"):
            _save_npy(Path(folder) / f"{key}.npy", getattr(self, key))

    @classmethod
    def load(cls, folder: str | os.PathLike, name: str | None = None) -> FlowPair:
        """Reads a pair written by `save` (labels default to zeros when absent)."""
        f = Path(folder)
        source, target = np.load(f / "source.npy"), np.load(f / "target.npy")
        flow = np.load(f / "flow.npy")

        def labels(key: str, n: int) -> np.ndarray:
            path = f / f"{key}.npy"
            return np.load(path).astype(np.int32) if path.is_file() else np.zeros(n, np.int32)

        return cls(
            source.astype(np.float32),
            target.astype(np.float32),
            flow.astype(np.float32),
            labels("labels", len(source)),
            labels("target_labels", len(target)),
            name or f.name,
        )


def _save_npy(path: Path, array: np.ndarray) -> None:
    save_npy_atomic(path, array)


@dataclass
class FlowSequence:
    """T lidar frames, the exact flow of each to the next, and exact trajectories of frame 0."""

    frames: list[np.ndarray]  # T clouds (N_k, 3) float32
    flows: list[np.ndarray]  # T - 1 arrays: flows[k] is the exact flow of frames[k] to time k + 1
    labels: list[np.ndarray]  # T arrays (N_k,) int32
    trajectories: np.ndarray  # (T, N_0, 3) float32: positions of frames[0]'s points at 0..T-1
    name: str
    meta: dict = field(default_factory=dict)


def _check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return int(value)


@dataclass(frozen=True)
class _ScanOptions:
    n_points: int
    n_beams: int = 64
    n_azimuth: int = 1024
    noise: float = 0.01
    remove_ground: bool = True

    def __post_init__(self) -> None:
        _check_int("n_points", self.n_points, 1)
        _check_int("n_beams", self.n_beams, 1)
        _check_int("n_azimuth", self.n_azimuth, 1)
        noise = self.noise
        if (
            isinstance(noise, bool)
            or not isinstance(noise, (int, float, np.floating))
            or not math.isfinite(noise)
            or noise < 0
        ):
            raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")


def _frame(scene: FlowScene, k: int, opt: _ScanOptions) -> tuple[np.ndarray, np.ndarray]:
    """Frame k of the scene: float32 points (at most n_points) and int32 labels. Its random
    numbers (azimuth offset, range noise, subsample) come from (seed, k) alone."""
    rng = np.random.default_rng(np.random.SeedSequence([scene.seed, 0xF10, k]))
    pts, labels = scene.scan(k, rng, opt.n_beams, opt.n_azimuth, float(opt.noise))
    if opt.remove_ground:
        keep = pts[:, 2] >= GROUND_HEIGHT
        pts, labels = pts[keep], labels[keep]
    if len(pts) > opt.n_points:
        sel = np.sort(rng.choice(len(pts), size=opt.n_points, replace=False))
        pts, labels = pts[sel], labels[sel]
    return pts.astype(np.float32), labels.astype(np.int32)


FRAMES = ("sensor", "world")


def _check_frame(frame: object) -> None:
    if frame not in FRAMES:
        raise ValueError(f"frame must be one of {FRAMES}, got {frame!r}")


def _to_sensor(scene: FlowScene, points: np.ndarray, time: float) -> np.ndarray:
    """World points (P, 3) in the coordinates of the lidar's pose at `time` (float64)."""
    r, c = scene.sensor_pose(time)
    return (np.asarray(points, dtype=np.float64) - c) @ r


def make_flow_pair(
    seed: int = 0,
    n_points: int = 8192,
    *,
    n_beams: int = 64,
    n_azimuth: int = 1024,
    noise: float = 0.01,
    remove_ground: bool = True,
    time: int = 0,
    frame: str = "sensor",
) -> FlowPair:
    """Frames `time` and `time + 1` (0 <= time <= N_FRAMES - 2) of the street scene (see the
    module docstring) with the exact flow of the source points. Each frame holds at most
    n_points points, subsampled independently (all of them when the sweep has fewer hits);
    `noise` is the standard deviation of the range noise in metres; `remove_ground` drops the
    points below GROUND_HEIGHT. Deterministic for a seed.

    `frame`: ``"sensor"`` (default) gives each cloud in the coordinates of its own lidar pose
    (x forward, z up, origin at the sensor), as KITTI and Argoverse scene-flow data are, so the
    flow includes the ego-motion (static points move by about 0.5 m); ``"world"`` gives both in
    the world frame (ego-motion compensated: static points have zero flow)."""
    _check_frame(frame)
    opt = _ScanOptions(n_points, n_beams, n_azimuth, noise, bool(remove_ground))
    time = _check_int("time", time, 0, N_FRAMES - 2)
    scene = FlowScene(_check_int("seed", seed, 0))
    src, lab = _frame(scene, time, opt)
    tgt, tlab = _frame(scene, time + 1, opt)
    flow = scene.flow(src, lab, time)
    sensor = [scene.sensor_pose(k)[1] for k in (time, time + 1)]
    if frame == "sensor":
        moved = src.astype(np.float64) + flow
        src = _to_sensor(scene, src, time)
        flow = _to_sensor(scene, moved, time + 1) - src
        tgt = _to_sensor(scene, tgt, time + 1)
    return FlowPair(
        src.astype(np.float32),
        tgt.astype(np.float32),
        flow.astype(np.float32),
        lab,
        tlab,
        f"street-s{seed}-t{time}",
        meta={"seed": seed, "time": time, "labels": LABELS, "sensor": sensor, "frame": frame},
    )


def make_flow_sequence(
    n_frames: int = 5, seed: int = 0, n_points: int = 8192, **kw: Any
) -> FlowSequence:
    """Frames 0 .. n_frames - 1 (2 <= n_frames <= N_FRAMES) of the street scene; keyword
    arguments n_beams, n_azimuth, noise, remove_ground and frame as in `make_flow_pair`, whose
    make_flow_pair(time=k).source is frames[k] here. In the sensor frame, trajectories[k] is in
    the coordinates of frame k's lidar pose, as frames[k] is."""
    frame = kw.pop("frame", "sensor")
    _check_frame(frame)
    opt = _ScanOptions(n_points, **kw)
    n_frames = _check_int("n_frames", n_frames, 2, N_FRAMES)
    scene = FlowScene(_check_int("seed", seed, 0))
    frames, labels = [], []
    for k in range(n_frames):
        pts, lab = _frame(scene, k, opt)
        frames.append(pts)
        labels.append(lab)
    flows = [scene.flow(frames[k], labels[k], k).astype(np.float32) for k in range(n_frames - 1)]
    traj = np.stack([scene.move(frames[0], labels[0], 0, k) for k in range(n_frames)])
    traj[0] = frames[0]
    sensor = [scene.sensor_pose(k)[1] for k in range(n_frames)]
    if frame == "sensor":
        flows = [
            (_to_sensor(scene, frames[k] + flows[k], k + 1) - _to_sensor(scene, frames[k], k))
            .astype(np.float32)
            for k in range(n_frames - 1)
        ]
        traj = np.stack([_to_sensor(scene, traj[k], k) for k in range(n_frames)])
        frames = [_to_sensor(scene, f, k).astype(np.float32) for k, f in enumerate(frames)]
    return FlowSequence(
        frames,
        flows,
        labels,
        traj.astype(np.float32),
        f"street-s{seed}-{n_frames}f",
        meta={"seed": seed, "labels": LABELS, "sensor": sensor, "frame": frame},
    )


def rigid_pair(
    points: np.ndarray,
    rotation_deg: float,
    translation: object,
    seed: int = 0,
    *,
    shuffle: bool = False,
) -> FlowPair:
    """A pair whose target is the source moved rigidly: target = R p + t, R a rotation by
    rotation_deg about the z axis, the same points with no resampling (index-aligned unless
    `shuffle`, which permutes the target with `seed`). All labels are 1."""
    src = np.asarray(points, dtype=np.float32)
    if src.ndim != 2 or src.shape[1] != 3 or len(src) == 0:
        raise ValueError(f"points must be a non-empty (N, 3) array, got shape {src.shape}")
    t = np.asarray(translation, dtype=np.float64).reshape(-1)
    if t.shape != (3,):
        raise ValueError(f"translation must have 3 components, got {t.shape[0]}")
    rot = _rot_z(math.radians(float(rotation_deg)))
    moved = src.astype(np.float64) @ rot.T + t
    flow = (moved - src).astype(np.float32)
    target = moved.astype(np.float32)
    if shuffle:
        target = target[np.random.default_rng(seed).permutation(len(target))]
    n = len(src)
    return FlowPair(
        src,
        target,
        flow,
        np.ones(n, np.int32),
        np.ones(n, np.int32),
        f"rigid-{rotation_deg:g}deg",
        meta={"rotation": rot, "translation": t},
    )
