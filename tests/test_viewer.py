"""The viewer without a browser: camera convention, what each field kind renders, loading
errors, and the render loop's frames (a stand-in client with viser's camera handle API)."""

import asyncio
import math
import time

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from fields.flow.view import FlowView
from fields.inr.view import SignalView
from fields.nerf.view import NerfView
from fields.viewer import ViewCamera, viser_to_c2w
from fields.viewer.camera import quaternion_to_matrix
from fields.viewer.views import Cancelled, load_view


def opencv_look_at(position, target, up):
    """(w, x, y, z) of a camera at `position` looking at `target` in viser's (OpenCV)
    convention: +z forward, -y along `up`, as viser's client reports it."""
    position, target, up = (np.asarray(v, dtype=np.float64) for v in (position, target, up))
    z = target - position
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    q = Rotation.from_matrix(np.stack([x, y, z], axis=1)).as_quat()  # x, y, z, w
    return (q[3], q[0], q[1], q[2])


# -- camera convention --


def test_quaternion_to_matrix_matches_scipy():
    rng = np.random.default_rng(0)
    for _ in range(10):
        q = rng.normal(size=4)
        want = Rotation.from_quat([q[1], q[2], q[3], q[0]]).as_matrix()
        np.testing.assert_allclose(quaternion_to_matrix(q), want, atol=1e-12)
    with pytest.raises(ValueError, match="quaternion"):
        quaternion_to_matrix((0, 0, 0, 0))


def test_identity_viser_camera_looks_down_world_z_with_image_up_minus_y():
    c2w = viser_to_c2w((1, 0, 0, 0), (1, 2, 3))
    # OpenGL: the camera looks down its -z axis, +y is up in the image
    torch.testing.assert_close(-c2w[:, 2], torch.tensor([0.0, 0.0, 1.0]))
    torch.testing.assert_close(c2w[:, 1], torch.tensor([0.0, -1.0, 0.0]))
    torch.testing.assert_close(c2w[:, 3], torch.tensor([1.0, 2.0, 3.0]))


def test_browser_camera_rays_hit_the_look_at_point_and_image_top_is_up():
    pos, target, up = (3.0, -2.0, 1.5), (0.2, 0.1, -0.3), (0.0, 0.0, 1.0)
    vc = ViewCamera(opencv_look_at(pos, target, up), pos, math.radians(50), 640, 480)
    cams = vc.cameras(64, 48)
    _, d = cams.pixel_rays(0)
    d = d.reshape(48, 64, 3)
    centre = 0.25 * (d[23, 31] + d[23, 32] + d[24, 31] + d[24, 32])
    want = torch.tensor(target) - torch.tensor(pos)
    assert torch.nn.functional.cosine_similarity(centre, want, dim=0) > 0.9999
    # the top row of the image points further along `up` than the bottom row
    assert float(d[0, 32, 2]) > float(d[-1, 32, 2]) + 0.3
    # and the right column to the camera's right (x of the OpenCV frame)
    right = torch.tensor(quaternion_to_matrix(vc.wxyz)[:, 0]).float()
    assert float(d[24, -1] @ right) > float(d[24, 0] @ right) + 0.3


def test_view_camera_field_of_view_spans_the_image():
    """A point on the vertical field of view's edge lands on the image's top edge, and one on
    the canvas's horizontal edge on the right edge, at any render size (the browser
    stretches the picture over the canvas)."""
    fov, w_canvas, h_canvas = math.radians(60), 800, 500
    vc = ViewCamera((1, 0, 0, 0), (0, 0, 0), fov, w_canvas, h_canvas)
    for w, h in [(80, 50), (100, 50), (800, 500)]:
        cams = vc.cameras(w, h)
        c2w = cams.c2w[0]
        top = torch.tensor([0.0, -math.tan(fov / 2), 1.0])  # world = OpenCV camera frame here
        right = torch.tensor([math.tan(fov / 2) * w_canvas / h_canvas, 0.0, 1.0])
        for p, (u_want, v_want) in ((top, (w / 2, 0.0)), (right, (w, h / 2))):
            x_cam = c2w[:, :3].T @ (p - c2w[:, 3])  # OpenGL camera frame
            u = cams.cx[0] + cams.fx[0] * x_cam[0] / -x_cam[2]
            v = cams.cy[0] - cams.fy[0] * x_cam[1] / -x_cam[2]
            assert abs(float(u) - u_want) < 1e-3 and abs(float(v) - v_want) < 1e-3


def test_view_camera_image_size_keeps_aspect_and_bounds():
    vc = ViewCamera((1, 0, 0, 0), (0, 0, 0), 1.0, 900, 600)
    w, h = vc.image_size(15000)
    assert abs(w * h - 15000) < 400 and abs(w / h - 1.5) < 0.05
    assert vc.image_size(1e9) == (900, 600)
    assert min(vc.image_size(1)) >= 8


# -- views --


def never() -> bool:
    return False


def nerf_view_camera(view, width=96, height=64):
    cam = view.initial_camera()
    wxyz = opencv_look_at(cam["position"], cam["look_at"], cam["up"])
    return ViewCamera(wxyz, cam["position"], cam["fov"], width, height)


def test_nerf_view_renders_what_the_renderer_renders(tiny_nerf):
    from fields.nerf import LoadedNerf, render_camera

    view = load_view(str(tiny_nerf))
    assert isinstance(view, NerfView)
    cams = nerf_view_camera(view).cameras(96, 64)
    got = view.render(cams, "rgb", never)
    nerf = LoadedNerf(str(tiny_nerf))
    want = render_camera(nerf.model, nerf.grid, cams, 0, nerf.settings, nerf.background)["rgb"]
    np.testing.assert_allclose(got, want.clamp(0, 1).numpy(), atol=1e-5)
    assert got.std() > 0.05  # the scene is in view, not just background
    # the quicker preview stays close to the full render
    preview = view.render(cams, "rgb", never, preview=True)
    assert np.abs(preview - got).mean() < 0.05
    for mode in ("depth", "opacity", "normals"):
        pic = view.render(cams, mode, never)
        assert pic.shape == (64, 96, 3) and np.isfinite(pic).all()
        assert 0.0 <= pic.min() and pic.max() <= 1.0 and pic.std() > 0.01, mode
    with pytest.raises(ValueError, match="mode"):
        view.render(cams, "sparkles", never)


def test_normals_from_depth_of_a_plane_and_a_sphere():
    """NerfView's normals from an exact depth map: a plane's are its normal, a sphere's are
    (p - c) / r away from the silhouette, and rays that hit nothing are black."""
    pos = (0.3, -2.5, 2.0)
    vc = ViewCamera(opencv_look_at(pos, (0, 0, 0), (0, 0, 1)), pos, math.radians(40), 80, 60)
    cams = vc.cameras(80, 60)
    o, d = cams.pixel_rays(0)
    # the plane z = 0
    t = -o[:, 2] / d[:, 2]
    pic = NerfView._normals(o, d, t.reshape(60, 80), torch.ones(60, 80)).reshape(-1, 3)
    torch.testing.assert_close(pic, torch.tensor([0.5, 0.5, 1.0]).expand_as(pic), atol=1e-4,
                               rtol=0)
    # a unit sphere at the origin: depth where rays hit, opacity 0 elsewhere
    b = (o * d).sum(-1)
    disc = b * b - (o * o).sum(-1) + 1.0
    hit = disc > 0
    t = torch.where(hit, -b - disc.clamp_min(0).sqrt(), torch.zeros(()))
    opacity = hit.float().reshape(60, 80)
    pic = NerfView._normals(o, d, (t * hit).reshape(60, 80), opacity).reshape(-1, 3)
    assert (pic[~hit] == 0).all()
    inner = disc > 0.3  # away from the silhouette, where neighbours hit too
    normals = pic[inner] * 2 - 1
    want = o[inner] + d[inner] * t[inner, None]
    assert float((normals * want).sum(-1).min()) > 0.995


def test_block_order_walks_the_screen_tile_by_tile():
    from fields.viewer.views import block_order

    order = block_order(5, 7, block=3)  # tiles of 3x3, the last ones cut by the edges
    assert sorted(order.tolist()) == list(range(35))
    assert order[:9].tolist() == [0, 1, 2, 7, 8, 9, 14, 15, 16]  # the first tile
    assert order[9:18].tolist() == [3, 4, 5, 10, 11, 12, 17, 18, 19]  # the one to its right
    assert order[18:21].tolist() == [6, 13, 20]  # the cut column
    with pytest.raises(ValueError, match="block_order"):
        block_order(0, 7)


def test_chunk_fits_the_measured_speed(tiny_nerf):
    """The rays between two checks of cancel follow the viewer's measured speed (about
    chunk_seconds of rendering), within [2^14, 2^17]."""
    view = load_view(str(tiny_nerf))
    view.fit_chunk(1e6)
    assert view.chunk == int(1e6 * view.chunk_seconds)
    view.fit_chunk(1e3)
    assert view.chunk == 2**14
    view.fit_chunk(1e9)
    assert view.chunk == 2**17


def test_render_is_abandoned_when_cancelled(tiny_nerf):
    view = load_view(str(tiny_nerf))
    view.chunk = 256
    cams = nerf_view_camera(view).cameras(64, 64)
    calls = []

    def cancel_after_two() -> bool:
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled):
        view.render(cams, "rgb", cancel_after_two)
    assert len(calls) == 3  # stopped at the third chunk of 16


@pytest.fixture(scope="module")
def tiny_inr(tmp_path_factory):
    """An INR image checkpoint of a 24 x 32 gradient, well fitted."""
    from fields.data.signals import grid_coords
    from fields.inr import fit_signal, save_inr_checkpoint

    h, w = 24, 32
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    image = torch.stack((xx, yy, 0.5 * torch.ones_like(xx)), dim=-1)
    fit = fit_signal(grid_coords((h, w)), image.reshape(-1, 3), "hash", seconds=30,
                     max_steps=300, finest=64)
    path = tmp_path_factory.mktemp("inr") / "inr.pt"
    save_inr_checkpoint(path, fit.field, {"kind": "image", "shape": [h, w], "channels": 3})
    return path, image


def test_signal_view_shows_the_image_head_on(tiny_inr):
    path, image = tiny_inr
    view = load_view(str(path))
    assert isinstance(view, SignalView)
    # a camera on the +z axis, looking at the origin, whose vertical field of view spans the
    # image's height exactly: the render is the image
    h, w = image.shape[:2]
    dist = 2.0
    fov = 2 * math.atan(view.half_h / dist)
    vc = ViewCamera(opencv_look_at((0, 0, dist), (0, 0, 0), (0, 1, 0)), (0, 0, dist), fov,
                    w * 10, h * 10)
    pic = view.render(vc.cameras(w, h), "rgb", never)
    assert pic.shape == (h, w, 3)
    assert np.abs(pic - image.numpy()).mean() < 0.03
    # zoomed out, the image sits in the middle; outside it the field is dimmed or hidden
    far = ViewCamera(opencv_look_at((0, 0, 3 * dist), (0, 0, 0), (0, 1, 0)), (0, 0, 3 * dist),
                     fov, w, h)
    view.settings["outside"] = "hidden"
    pic = view.render(far.cameras(w, h), "rgb", never)
    assert pic[0, 0].sum() == 0 and pic[h // 2, w // 2].sum() > 0.5
    # looking away from the plane shows nothing
    away = ViewCamera(opencv_look_at((0, 0, dist), (0, 0, 5), (0, 1, 0)), (0, 0, dist), fov,
                      w, h)
    assert view.render(away.cameras(w, h), "rgb", never).sum() == 0


def test_flow_view_vectors_follow_the_field(tmp_path):
    from fields.flow import FlowConfig, FlowField, FlowFit, save_flow_checkpoint

    torch.manual_seed(0)
    field = FlowField(FlowConfig(width=16, depth=2))
    src, tgt = torch.randn(100, 3), torch.randn(80, 3)
    fit = FlowFit(flow=torch.zeros(100, 3), forward_field=field, backward_field=None,
                  config=FlowConfig(width=16, depth=2), iters=0, best_iter=0, best_loss=0.0,
                  seconds=0.0, setup_seconds=0.0)
    save_flow_checkpoint(tmp_path / "flow.pt", fit, src, tgt)
    view = load_view(str(tmp_path / "flow.pt"))
    assert isinstance(view, FlowView) and not view.renders_image
    seg = view.vectors(10)
    assert seg.shape == (10, 2, 3)
    with torch.no_grad():
        want = src[::10] + field(src[::10])
    np.testing.assert_allclose(seg[:, 1], want.numpy(), atol=1e-5)


def test_load_view_errors_name_the_file_and_field(tmp_path, tiny_inr):
    from fields.checkpoint import save_checkpoint
    from fields.inr import load_inr, save_inr_checkpoint

    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        load_view(str(tmp_path / "missing.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"junk\.pt"):
        load_view(str(tmp_path / "junk.pt"))
    save_checkpoint(tmp_path / "other.pt", torch.nn.Linear(2, 2), extra={"kind": "mystery"})
    with pytest.raises(ValueError, match=r"other.pt: field 'kind' is 'mystery'"):
        load_view(str(tmp_path / "other.pt"))
    model, _ = load_inr(tiny_inr[0])
    save_inr_checkpoint(tmp_path / "audio.pt", model, {"kind": "audio", "shape": [100]})
    with pytest.raises(ValueError, match=r"audio.pt.*signal.kind"):
        load_view(str(tmp_path / "audio.pt"))


# -- the render loop, with a stand-in client --


class FakeCamera:
    """viser's CameraHandle, as far as the viewer reads it."""

    def __init__(self, vc: ViewCamera) -> None:
        self.callbacks = []
        self.set(vc)

    def set(self, vc: ViewCamera) -> None:
        self.wxyz, self.position, self.fov = vc.wxyz, vc.position, vc.fov
        self.image_width, self.image_height = vc.width, vc.height
        for cb in self.callbacks:
            out = cb(self)
            if asyncio.iscoroutine(out):  # viser awaits async callbacks on its event loop
                asyncio.run(out)

    def on_update(self, cb):
        self.callbacks.append(cb)
        return cb


class FakeClient:
    def __init__(self, vc: ViewCamera, client_id: int = 7) -> None:
        from types import SimpleNamespace

        self.client_id = client_id
        self.camera = FakeCamera(vc)
        self.sent = []
        self.gui = SimpleNamespace(add_markdown=lambda text: SimpleNamespace(content=text))
        self.scene = SimpleNamespace(set_background_image=self._send)

    def _send(self, image, format="jpeg", jpeg_quality=None):
        self.sent.append((time.perf_counter(), image))


def wait_for(predicate, seconds=30.0):
    t = time.perf_counter()
    while time.perf_counter() - t < seconds:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def start_session(viewer, vc):
    """A ClientSession for a stand-in client at camera `vc`, registered with `viewer` (which
    closes it)."""
    from fields.viewer.server import ClientSession

    client = FakeClient(vc)
    session = ClientSession(viewer, client)  # takes the client's current camera
    viewer.sessions[session.id] = session
    session.thread.start()
    return client, session


def test_render_loop_previews_while_moving_then_sends_the_full_frame(tiny_nerf):
    from fields.viewer import Viewer

    view = load_view(str(tiny_nerf))
    viewer = Viewer(view, port=0, max_resolution=64, target_fps=30, settle_seconds=0.3)
    try:
        vc = nerf_view_camera(view, 640, 480)
        client, session = start_session(viewer, vc)
        assert wait_for(lambda: session.last_frame is not None and session.last_frame.full)
        full = session.last_frame
        assert full.image.shape == (48, 64, 3)  # the longer side at max_resolution
        # the camera moves for a while: previews only, then one full frame at the last camera
        sent_before = len(session.frames)
        start = time.perf_counter()
        k = 0
        while time.perf_counter() - start < 1.0:
            k += 1
            pos = np.asarray(vc.position) * (1.0 + 0.002 * k)
            moved = ViewCamera(vc.wxyz, tuple(pos), vc.fov, vc.width, vc.height)
            client.camera.set(moved)
            time.sleep(0.02)
        stopped = time.perf_counter()
        during = [f for f in list(session.frames)[sent_before:] if f.sent_at < stopped]
        assert len(during) >= 3 and not any(f.full for f in during)
        assert wait_for(lambda: session.last_frame.full and session.last_frame.camera == moved)
        assert session.last_frame.sent_at - stopped >= 0.25  # after the settle time
        assert len(client.sent) == len(session.frames)
        # a settings change renders the full frame again; a preview-only refresh does not
        n = len(session.frames)
        viewer.mode = "depth"
        session.invalidate()
        assert wait_for(lambda: len(session.frames) > n and session.last_frame.mode == "depth")
        assert session.last_frame.full
        n = len(session.frames)
        session.invalidate(full=False)
        assert wait_for(lambda: len(session.frames) > n)
        time.sleep(0.5)
        assert len(session.frames) == n + 1 and not session.last_frame.full
        # ... but a refresh does not cancel a full frame still owed
        with session.cond:
            session.full_version = session.version - 1  # as if the camera had just moved
        session.invalidate(full=False)
        assert wait_for(lambda: session.last_frame.full and session.full_version ==
                        session.version)
    finally:
        viewer.close()
    assert not session.thread.is_alive()


def test_training_waits_while_the_camera_moves_and_the_frame_renders(tiny_nerf):
    import threading

    from fields.viewer import Viewer

    view = load_view(str(tiny_nerf))
    viewer = Viewer(view, port=0, max_resolution=48, settle_seconds=0.3, refresh_seconds=1e9)
    try:
        _, session = start_session(viewer, nerf_view_camera(view, 320, 240))  # just moved
        start = time.perf_counter()
        worker = threading.Thread(target=viewer.training_step,
                                  args=(5, 1.0, {"loss": 0.01, "psnr": 20.0}), daemon=True)
        worker.start()
        worker.join(timeout=30)
        assert not worker.is_alive(), "training_step never returned"
        waited = time.perf_counter() - start
        assert waited >= 0.25  # at least the settle time
        assert session.last_frame is not None and session.last_frame.full
        assert "step **5**" in viewer._train_md.content and "20.00 dB" in viewer._train_md.content
        # nothing moving, nothing due: the next step goes straight on
        start = time.perf_counter()
        viewer.training_step(6, 1.1, {"loss": 0.01})
        assert time.perf_counter() - start < 0.1
    finally:
        viewer.close()


def run_cli(args, stop_when, timeout=120.0):
    """Runs `fields ARGS` in a subprocess until a line of its output contains `stop_when`,
    then sends it Ctrl-C (SIGINT); returns (exit code, output)."""
    import signal
    import subprocess
    import sys
    import threading

    proc = subprocess.Popen([sys.executable, "-m", "fields.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**__import__("os").environ, "COLUMNS": "200"})
    lines: list[str] = []
    seen = threading.Event()

    def read():
        for line in proc.stdout:
            lines.append(line)
            if stop_when in line:
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert seen.wait(timeout), "".join(lines)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=5)
    return code, "".join(lines)


def http_ok(url):
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status == 200 and b"<html" in r.read().lower()


def test_fields_view_serves_the_page_and_stops_on_ctrl_c(tiny_nerf, tmp_path):
    from fields.viewer.server import _free_port

    port = _free_port("127.0.0.1")
    code, out = run_cli(["view", str(tiny_nerf), "--port", str(port)], "viewer at")
    assert code == 0 and "viewer stopped" in out, out
    # a checkpoint that cannot be loaded: the error is printed, the server still starts
    port = _free_port("127.0.0.1")
    code, out = run_cli(["view", str(tmp_path / "nope.pt"), "--port", str(port)], "viewer at")
    assert code == 0 and "nope.pt" in out and "viewer stopped" in out, out


def test_fields_view_page_is_served(tiny_nerf):
    from fields.viewer import Viewer

    viewer = Viewer(load_view(str(tiny_nerf)), port=0)
    try:
        assert http_ok(viewer.url)
    finally:
        viewer.close()


def test_fit_nerf_with_the_viewer(tiny_scene_dir, tmp_path):
    import json

    from conftest import tiny_config

    from fields.viewer.server import _free_port

    port = _free_port("127.0.0.1")
    code, out = run_cli(["fit", "nerf", "--data", str(tiny_scene_dir), "--output",
                         str(tmp_path / "run"), "--steps", "30", "--video-frames", "0",
                         "--config", json.dumps(tiny_config().to_dict()),
                         "--viewer", "--viewer-port", str(port)], "viewer still at")
    assert code == 0, out
    assert (tmp_path / "run" / "checkpoint.pt").exists()
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["steps"] == 30


def test_mesh_files_are_shown_with_their_colours(tmp_path):
    from types import SimpleNamespace

    from fields.data.pointclouds import write_ply
    from fields.viewer import MeshView

    verts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    faces = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9]], dtype=np.uint8)
    write_ply(tmp_path / "tet.ply", verts, faces, colours)
    view = load_view(str(tmp_path / "tet.ply"))
    assert isinstance(view, MeshView) and not view.renders_image
    np.testing.assert_allclose(view.vertices, verts)
    np.testing.assert_array_equal(view.faces, faces)
    np.testing.assert_array_equal(view.colors, colours)
    added = []
    scene = SimpleNamespace(add_mesh_trimesh=lambda name, mesh: added.append(mesh),
                            add_mesh_simple=lambda name, v, f, **kw: added.append((v, f, kw)))
    view.setup_scene(SimpleNamespace(scene=scene))
    np.testing.assert_array_equal(np.asarray(added[0].visual.vertex_colors)[:, :3], colours)
    view.settings["wireframe"] = True
    view.setup_scene(SimpleNamespace(scene=scene))
    assert added[1][2]["wireframe"]
    # bad input names the file
    (tmp_path / "bad.obj").write_text("f 1 2 9\n")
    with pytest.raises(ValueError, match=r"bad\.obj"):
        load_view(str(tmp_path / "bad.obj"))
    with pytest.raises(FileNotFoundError, match=r"gone\.ply"):
        load_view(str(tmp_path / "gone.ply"))


def test_viewer_rejects_bad_settings_before_serving(tiny_nerf, tmp_path):
    from fields.checkpoint import save_checkpoint
    from fields.viewer import Viewer

    with pytest.raises(OSError, match=r"10\.255\.255\.1"):
        Viewer(host="10.255.255.1", port=0)
    for kw in ({"target_fps": 0.5}, {"target_fps": 100}, {"max_resolution": 8},
               {"frame_share": 0.0}):
        with pytest.raises(ValueError, match=next(iter(kw))):
            Viewer(port=0, **kw)
    # a checkpoint that claims to be a NeRF but lacks its fields: an error naming the file,
    # and the server keeps going
    save_checkpoint(tmp_path / "hollow.pt", torch.nn.Linear(1, 1),
                    extra={"kind": "nerf", "nerf": {}})
    viewer = Viewer(port=0)
    try:
        assert not viewer.load(str(tmp_path / "hollow.pt"))
        assert "hollow.pt" in viewer.error
        assert viewer.load(str(tiny_nerf)) and viewer.error is None
    finally:
        viewer.close()


def test_sdf_view_sphere_traces_the_field(tmp_path):
    from fields.checkpoint import save_checkpoint
    from fields.scenes.shapes import sphere
    from fields.sdf.field import SDFConfig, SDFField
    from fields.sdf.view import SDFView

    cube = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    field = SDFField(cube, SDFConfig(finest_resolution=64, log2_hashmap_size=12, n_levels=4))
    save_checkpoint(tmp_path / "sdf.pt", field, extra={
        "kind": "sdf", "sdf": {"aabb": cube.tolist(), "config": field.config.to_dict()}})
    view = load_view(str(tmp_path / "sdf.pt"))
    assert isinstance(view, SDFView)
    # the view renders any SDF: an exact sphere, seen head on, fills the middle of the image
    view.field = sphere(0.5)
    vc = ViewCamera(opencv_look_at((0, 0, 3), (0, 0, 0), (0, 1, 0)), (0, 0, 3),
                    math.radians(30), 64, 64)
    cams = vc.cameras(32, 32)
    shaded = view.render(cams, "shaded", never)
    assert shaded[16, 16].mean() < 0.95 and (shaded[0, 0] == 1.0).all()
    normals = view.render(cams, "normals", never)
    np.testing.assert_allclose(normals[16, 16] * 2 - 1, [0, 0, 1], atol=0.1)
    depth = view.render(cams, "depth", never, preview=True)
    assert depth[16, 16].sum() > 0 and depth[0, 0].sum() == 0
    with pytest.raises(ValueError, match="mode"):
        view.render(cams, "rgb", never)


def test_viewer_bench_summary_is_the_medians_over_the_drags():
    from fields.viewer.bench import ViewerBenchRow, summarise_rows

    rows = [ViewerBenchRow(i, fps, fps, size, 40.0, "512x288", 1.0, full)
            for i, (fps, size, full) in enumerate(
                [(12.0, "100x50", 0.5), (10.0, "200x100", 0.25), (14.0, "-", 1.0)])]
    s = summarise_rows(rows)
    assert s["full_fps"] == pytest.approx(2.0)  # 1 / median(0.5, 0.25, 1.0)
    assert s["moving_fps"] == 12.0
    # previews: 5000 x 12, 20000 x 10, none: the median is 60000 pixels per second
    assert s["preview_pixels_per_s"] == pytest.approx(60000.0)
