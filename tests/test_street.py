"""Synthetic lidar scene-flow pairs and sequences (fields.scenes.street): exact flow checked
against the scene's own SDF and rigid motions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fields.scenes.street import (
    LABELS,
    MAX_RANGE,
    N_FRAMES,
    NONRIGID_LABELS,
    RIGID_LABELS,
    FlowPair,
    FlowScene,
    make_flow_pair,
    make_flow_sequence,
    rigid_pair,
    scene_sdf,
)

SMALL = {"n_beams": 32, "n_azimuth": 512, "frame": "world"}  # a quarter of the rays: fast


@pytest.fixture(scope="module")
def default_pair() -> FlowPair:
    return make_flow_pair(frame="world")


@pytest.fixture(scope="module")
def exact_pair() -> FlowPair:
    """Full resolution, no noise, no subsampling, ground kept, mid-sequence."""
    return make_flow_pair(n_points=10**6, noise=0.0, remove_ground=False, time=7, frame="world")


def _kabsch(p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pc, qc = p.mean(0), q.mean(0)
    u, _, vt = np.linalg.svd((p - pc).T @ (q - qc))
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(vt.T @ u.T))])
    r = vt.T @ d @ u.T
    return r, qc - r @ pc


def test_default_pair_shapes_and_content(default_pair: FlowPair) -> None:
    p = default_pair
    assert p.source.shape == (8192, 3) and p.target.shape == (8192, 3)  # plenty of hits
    assert p.flow.shape == p.source.shape
    assert p.labels.shape == (8192,) and p.target_labels.shape == (8192,)
    for a in (p.source, p.target, p.flow):
        assert a.dtype == np.float32 and np.isfinite(a).all()
    assert p.labels.dtype == np.int32 and p.target_labels.dtype == np.int32
    assert p.labels.min() >= 0 and p.labels.max() < len(LABELS)
    present = set(np.unique(p.labels).tolist())
    assert {0, 1, 2, 3, 4, 5, 12} <= present  # every car, the pedestrian, the sculpture
    assert len(present) >= 10
    speed = np.linalg.norm(p.flow, axis=1)
    moving = p.labels > 0
    assert 0.05 < moving.mean() < 0.5
    assert np.all(speed[p.labels == 0] == 0)
    for label in (1, 2, 3, 4):  # cars: 0.2 .. 1 m per frame
        assert 0.2 < speed[p.labels == label].mean() < 1.0
    # within the lidar's range around the sensor, and far from trivially close
    sensor = p.meta["sensor"][0]
    assert np.linalg.norm(p.source - sensor, axis=1).max() <= MAX_RANGE + 0.1


def test_deterministic_and_seeded() -> None:
    a = make_flow_pair(seed=3, n_points=2000, **SMALL)
    b = make_flow_pair(seed=3, n_points=2000, **SMALL)
    for key in ("source", "target", "flow", "labels", "target_labels"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    c = make_flow_pair(seed=4, n_points=2000, **SMALL)
    assert not np.array_equal(a.source, c.source)


def test_frames_sample_differently(default_pair: FlowPair) -> None:
    p = default_pair
    both = np.concatenate((p.source, p.target))
    assert len(np.unique(both, axis=0)) == len(both)  # no point appears in both frames
    # even the static background is sampled at different places (moving sensor, offsets)
    static_src = p.source[p.labels == 0][:500].astype(np.float64)
    static_tgt = p.target[p.target_labels == 0].astype(np.float64)
    nearest = np.sqrt(((static_src[:, None] - static_tgt[None]) ** 2).sum(-1)).min(1)
    assert np.median(nearest) > 0.01


def test_rigid_flow_is_one_rigid_motion_per_object(default_pair: FlowPair) -> None:
    p = default_pair
    scene = FlowScene(0)
    src = p.source.astype(np.float64)
    checked = 0
    for label in RIGID_LABELS:
        sel = p.labels == label
        if sel.sum() < 4:
            continue
        q = src[sel] + p.flow[sel]
        r, t = _kabsch(src[sel], q)
        assert np.abs(src[sel] @ r.T + t - q).max() < 1e-4, LABELS[label]
        r_true, t_true = scene.rigid_motion(label, 0)
        np.testing.assert_allclose(src[sel] @ r_true.T + t_true - src[sel], p.flow[sel], atol=1e-5)
        checked += 1
    assert checked >= 6
    # the sculpture is not rigid: one rigid motion leaves a clear residual
    sel = p.labels == NONRIGID_LABELS[0]
    r, t = _kabsch(src[sel], src[sel] + p.flow[sel])
    assert np.abs(src[sel] @ r.T + t - (src[sel] + p.flow[sel])).max() > 1e-2


def test_points_on_surface_now_and_after_flow(exact_pair: FlowPair) -> None:
    p = exact_pair
    src = p.source.astype(np.float64)
    assert np.abs(scene_sdf(src, 7)).max() < 1e-3
    moved = src + p.flow.astype(np.float64)
    after = scene_sdf(moved, 8)
    assert np.abs(after).max() < 1e-3
    for label in (*RIGID_LABELS[:5], *NONRIGID_LABELS):  # cars, torso, sculpture all present
        assert (p.labels == label).sum() > 10, LABELS[label]
    assert len(np.unique(p.labels)) >= 12  # the articulated parts are checked too
    # the flow is not trivially zero where things move: points are off the surface at t+1
    # if they are left where they were
    sel = p.labels > 0
    assert np.median(np.abs(scene_sdf(src[sel], 8))) > 0.01


def test_labels_agree_with_scene(exact_pair: FlowPair) -> None:
    scene = FlowScene(0)
    p = exact_pair
    obj = p.source[:, 2] > 0.01  # ground points touch the static objects' bases
    np.testing.assert_array_equal(scene.labels(p.source[obj], 7), p.labels[obj])


def test_noise_moves_points_off_surface() -> None:
    p = make_flow_pair(n_points=3000, noise=0.02, **SMALL)
    d = np.abs(scene_sdf(p.source, 0))
    assert 0.003 < np.median(d) < 0.03 and d.max() < 0.2


def test_ground_removal() -> None:
    kept = make_flow_pair(n_points=10**6, remove_ground=False, **SMALL)
    removed = make_flow_pair(n_points=10**6, remove_ground=True, **SMALL)
    assert removed.source[:, 2].min() >= 0.3 and removed.target[:, 2].min() >= 0.3
    ground = kept.source[:, 2] < 0.05
    assert ground.mean() > 0.3 and np.all(kept.labels[ground] == 0)
    assert len(removed.source) == (kept.source[:, 2] >= 0.3).sum()


def test_n_points_caps_each_frame() -> None:
    p = make_flow_pair(n_points=100, **SMALL)
    assert len(p.source) == 100 and len(p.target) == 100
    everything = make_flow_pair(n_points=10**6, **SMALL)
    assert 1000 < len(everything.source) < 10**6


def test_sequence_matches_pairs_and_trajectories() -> None:
    seq = make_flow_sequence(n_frames=4, seed=1, n_points=3000, noise=0.0, **SMALL)
    assert len(seq.frames) == 4 and len(seq.flows) == 3 and len(seq.labels) == 4
    n0 = len(seq.frames[0])
    assert seq.trajectories.shape == (4, n0, 3) and seq.trajectories.dtype == np.float32
    for f, flow, lab in zip(seq.frames[:-1], seq.flows, seq.labels[:-1], strict=True):
        assert flow.shape == f.shape and lab.shape == (len(f),)
    np.testing.assert_array_equal(seq.trajectories[0], seq.frames[0])
    # chaining the exact per-frame flow field from frame 0 gives the trajectories
    scene = FlowScene(1)
    x = seq.frames[0].astype(np.float64)
    np.testing.assert_allclose(x + seq.flows[0], seq.trajectories[1], atol=1e-5)
    for k in range(3):
        x = x + scene.flow(x, seq.labels[0], k)
        np.testing.assert_allclose(x, seq.trajectories[k + 1], atol=1e-4)
    # trajectories stay on the moving surfaces
    for k in range(4):
        assert np.abs(scene_sdf(seq.trajectories[k], k, seed=1)).max() < 1e-3
    # pair k of the same seed is frames k and k + 1 of the sequence
    pair = make_flow_pair(seed=1, n_points=3000, noise=0.0, time=2, **SMALL)
    np.testing.assert_array_equal(pair.source, seq.frames[2])
    np.testing.assert_array_equal(pair.target, seq.frames[3])
    np.testing.assert_array_equal(pair.flow, seq.flows[2])
    np.testing.assert_array_equal(pair.target_labels, seq.labels[3])


@pytest.mark.parametrize("seed", [0, 5])
def test_no_interpenetration_and_in_view(seed: int) -> None:
    """Over all the checked frames: no two objects overlap (for exact SDFs d_i + d_j > 0
    everywhere when they are apart; the sculpture's bound is checked by its inside points),
    and every moving object stays well inside the lidar's range."""
    scene = FlowScene(seed)
    rng = np.random.default_rng(0)
    for t in range(N_FRAMES):
        centres = [scene.objects[k].pose(t)[1] for k in range(1, 6)]
        centres.append(np.asarray(scene.sculpture.base))
        sensor = scene.sensor_pose(t)[1]
        for c in centres:
            assert np.linalg.norm(c[:2] - sensor[:2]) < MAX_RANGE - 5
        xy = np.concatenate([c[:2] + rng.uniform(-3.5, 3.5, (3000, 2)) for c in centres])
        pts = np.column_stack((xy, rng.uniform(-0.1, 3.0, len(xy))))
        d = scene.label_sdf(pts, t)
        inside = d[:, NONRIGID_LABELS[0]] <= 0
        assert d[inside, : NONRIGID_LABELS[0]].min() > 0
        rigid = np.sort(d[:, : NONRIGID_LABELS[0]], axis=1)
        assert (rigid[:, 0] + rigid[:, 1]).min() > 0.01


def test_rigid_pair() -> None:
    pts = np.random.default_rng(0).normal(size=(50, 3))
    p = rigid_pair(pts, 30.0, (1.0, -2.0, 0.5))
    a = math.radians(30.0)
    r = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    np.testing.assert_allclose(p.target, pts @ r.T + [1.0, -2.0, 0.5], atol=1e-5)
    np.testing.assert_allclose(p.source + p.flow, p.target, atol=1e-5)
    assert p.source.dtype == p.target.dtype == p.flow.dtype == np.float32
    shuffled = rigid_pair(pts, 30.0, (1.0, -2.0, 0.5), seed=2, shuffle=True)
    assert not np.array_equal(shuffled.target, p.target)
    np.testing.assert_array_equal(np.sort(shuffled.target, 0), np.sort(p.target, 0))
    with pytest.raises(ValueError):
        rigid_pair(pts[:, :2], 0.0, (0, 0, 0))
    with pytest.raises(ValueError):
        rigid_pair(pts, 0.0, (0, 0))


def test_save_and_load(tmp_path, default_pair: FlowPair) -> None:
    default_pair.save(tmp_path / "pair")
    names = sorted(f.name for f in (tmp_path / "pair").iterdir())
    assert names == ["flow.npy", "labels.npy", "source.npy", "target.npy", "target_labels.npy"]
    back = FlowPair.load(tmp_path / "pair")
    for key in ("source", "target", "flow", "labels", "target_labels"):
        np.testing.assert_array_equal(getattr(back, key), getattr(default_pair, key))


@pytest.mark.parametrize(
    "kw",
    [
        {"n_points": 0},
        {"n_points": 2.5},
        {"n_beams": 0},
        {"n_azimuth": 0},
        {"noise": -0.1},
        {"noise": float("nan")},
        {"time": -1},
        {"time": N_FRAMES - 1},
        {"seed": -1},
    ],
)
def test_bad_pair_arguments(kw: dict) -> None:
    with pytest.raises(ValueError):
        make_flow_pair(**kw)


@pytest.mark.parametrize(
    "kw", [{"n_frames": 1}, {"n_frames": N_FRAMES + 1}, {"n_points": 0}, {"n_beams": 0}]
)
def test_bad_sequence_arguments(kw: dict) -> None:
    with pytest.raises(ValueError):
        make_flow_sequence(**kw)


def test_sensor_frame_is_the_world_frame_seen_from_the_lidar() -> None:
    kw = {"n_beams": 32, "n_azimuth": 512, "n_points": 3000, "time": 3}
    world = make_flow_pair(frame="world", **kw)
    sensor = make_flow_pair(**kw)  # the default
    scene = FlowScene(0)
    (r0, c0), (r1, c1) = scene.sensor_pose(3), scene.sensor_pose(4)
    assert np.allclose(sensor.source, (world.source - c0) @ r0, atol=1e-4)
    assert np.allclose(sensor.target, (world.target - c1) @ r1, atol=1e-4)
    moved = (world.source + world.flow - c1) @ r1
    assert np.allclose(sensor.source + sensor.flow, moved, atol=1e-4)
    # static points move by the inverse ego-motion: one rigid transform, about 0.5 m
    static = sensor.labels == 0
    r, t = _kabsch(sensor.source[static], sensor.source[static] + sensor.flow[static])
    fitted = sensor.source[static] @ r.T + t
    assert np.abs(fitted - (sensor.source[static] + sensor.flow[static])).max() < 1e-4
    assert 0.4 < np.linalg.norm(sensor.flow[static], axis=1).mean() < 0.6
    seq = make_flow_sequence(n_frames=3, n_points=2000, n_beams=32, n_azimuth=512)
    assert np.allclose(seq.trajectories[1], seq.frames[0] + seq.flows[0], atol=1e-4)
    with pytest.raises(ValueError, match="frame"):
        make_flow_pair(frame="camera", **kw)
