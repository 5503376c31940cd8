"""The viewer in a real browser: Debian's chromium, headless, driven by Playwright, against a
viewer on 127.0.0.1. Installs nothing: `make setup` installs chromium where apt is available,
and these tests skip (saying why) where it is not."""

import os
import shutil
import time

import numpy as np
import pytest
import torch
from test_viewer import wait_for

from fields.viewer import Viewer, load_view

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright (Python) is not installed: `make setup` installs it"
)
pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason="Debian's chromium is not installed (`make setup` installs it with apt where apt is "
           "available)",
)
# chromium headless on a machine without a network or a GPU: software WebGL, no background
# connections
CHROMIUM_ARGS = ["--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--enable-unsafe-swiftshader"]
VIEWPORT = {"width": 800, "height": 600}
# a part of the page that no overlay covers (panel: top right, notices: top left, axes:
# bottom left)
REGION = (slice(220, 560), slice(120, 440))


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def viewer():
    v = Viewer(port=0, max_resolution=200, settle_seconds=0.2)
    yield v
    v.close()


def only_session(viewer):
    assert wait_for(lambda: len(viewer.sessions) == 1), "the page did not connect"
    return next(iter(viewer.sessions.values()))


def settled_full_frame(session, after=0.0):
    """Waits for a full frame sent after `after` with no newer camera, then lets the page
    draw it."""
    assert wait_for(lambda: session.last_frame is not None and session.last_frame.full
                    and session.last_frame.sent_at > after
                    and session.last_frame.version == session.version), "no full frame"
    time.sleep(0.6)
    return session.last_frame


def screenshot(page) -> np.ndarray:
    import imageio.v3 as iio

    return iio.imread(page.screenshot(), extension=".png")[..., :3].astype(np.float32) / 255


def direct_render(checkpoint, frame, size) -> np.ndarray:
    """The renderer's own picture of the frame's camera, at the frame's resolution, resized
    to the page's canvas like the browser stretches it."""
    from skimage.transform import resize

    from fields.nerf import LoadedNerf, render_camera

    nerf = LoadedNerf(str(checkpoint))
    h, w = frame.image.shape[:2]
    rgb = render_camera(nerf.model, nerf.grid, frame.camera.cameras(w, h), 0, nerf.settings,
                        nerf.background)["rgb"].clamp(0, 1).numpy()
    return resize(rgb, (size[1], size[0], 3), order=1)


def test_page_connects_and_shows_what_the_renderer_renders(browser, viewer, tiny_nerf):
    viewer.set_view(load_view(str(tiny_nerf)))
    page = browser.new_page(viewport=VIEWPORT)
    try:
        page.goto(viewer.url)
        session = only_session(viewer)
        page.get_by_text("Connected").first.wait_for(timeout=20_000)
        frame = settled_full_frame(session)
        assert (frame.camera.width, frame.camera.height) == (800, 600)
        # viser's own look-at point (not our conversion) lands in the middle of our image
        cams = frame.camera.cameras(800, 600)
        c2w = cams.c2w[0]
        x = c2w[:, :3].T @ (torch.tensor(session.client.camera.look_at).float() - c2w[:, 3])
        u = cams.cx[0] + cams.fx[0] * x[0] / -x[2]
        v = cams.cy[0] - cams.fy[0] * x[1] / -x[2]
        assert float(x[2]) < 0 and abs(float(u) - 400) < 2 and abs(float(v) - 300) < 2
        shot = screenshot(page)[REGION]
        want = direct_render(tiny_nerf, frame, (800, 600))[REGION]
        assert shot.std() > 0.05, "the page shows a blank frame"
        corr = np.corrcoef(shot.ravel(), want.ravel())[0, 1]
        assert np.abs(shot - want).mean() < 0.03 and corr > 0.95, (np.abs(shot - want).mean(),
                                                                  corr)
        # a camera move (a drag on the canvas) gives a different picture
        page.mouse.move(300, 400)
        page.mouse.down()
        for i in range(20):
            page.mouse.move(300 + 8 * i, 400 - 2 * i)
            time.sleep(0.02)
        page.mouse.up()
        moved_at = time.perf_counter()
        frame2 = settled_full_frame(session, after=moved_at)
        assert frame2.camera != frame.camera
        shot2 = screenshot(page)[REGION]
        assert np.abs(shot2 - shot).mean() > 0.05
        want2 = direct_render(tiny_nerf, frame2, (800, 600))[REGION]
        assert np.abs(shot2 - want2).mean() < 0.03
        assert not session.errors
    finally:
        page.close()


def test_a_checkpoint_that_fails_to_load_is_reported_in_the_page(browser, viewer, tmp_path,
                                                                  tiny_nerf):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"\x00" * 64)
    assert not viewer.load(str(bad))
    page = browser.new_page(viewport=VIEWPORT)
    try:
        page.goto(viewer.url)
        page.get_by_text("Could not load the checkpoint").first.wait_for(timeout=20_000)
        assert "broken.pt" in page.content()
        session = only_session(viewer)
        # the server is alive: loading a good checkpoint shows it
        assert viewer.load(str(tiny_nerf))
        frame = settled_full_frame(session)
        assert screenshot(page)[REGION].std() > 0.05 and frame.image.std() > 10
    finally:
        page.close()


def test_clients_come_and_go(browser, viewer, tiny_nerf):
    viewer.set_view(load_view(str(tiny_nerf)))
    first, second = browser.new_page(viewport=VIEWPORT), browser.new_page(viewport=VIEWPORT)
    try:
        first.goto(viewer.url)
        second.goto(viewer.url)
        assert wait_for(lambda: len(viewer.sessions) == 2)
        sessions = list(viewer.sessions.values())
        for s in sessions:
            settled_full_frame(s)
        first.close()
        assert wait_for(lambda: len(viewer.sessions) == 1), "the closed page was not dropped"
        (left,) = viewer.sessions.values()
        assert wait_for(lambda: not any(s.thread.is_alive() for s in sessions
                                        if s is not left))
        before = time.perf_counter()
        second.mouse.move(400, 400)
        second.mouse.down()
        second.mouse.move(480, 380, steps=8)
        second.mouse.up()
        settled_full_frame(left, after=before)
        # and a new page can still connect
        third = browser.new_page(viewport=VIEWPORT)
        third.goto(viewer.url)
        assert wait_for(lambda: len(viewer.sessions) == 2)
        third.close()
    finally:
        second.close()


def test_inr_image_in_the_page(browser, viewer, tmp_path):
    """An INR image checkpoint: the page shows the image plane, not a blank canvas."""
    from fields.data.signals import grid_coords
    from fields.inr import fit_signal, save_inr_checkpoint

    h, w = 24, 32
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    image = torch.stack((xx, yy, 1 - xx), dim=-1)
    fit = fit_signal(grid_coords((h, w)), image.reshape(-1, 3), "hash", seconds=20,
                     max_steps=200, finest=64)
    save_inr_checkpoint(tmp_path / "inr.pt", fit.field,
                        {"kind": "image", "shape": [h, w], "channels": 3})
    assert viewer.load(str(tmp_path / "inr.pt"))
    page = browser.new_page(viewport=VIEWPORT)
    try:
        page.goto(viewer.url)
        frame = settled_full_frame(only_session(viewer))
        shot = screenshot(page)
        assert frame.image.std() > 10
        # the image's middle is in the middle of the page (red = x = 0.5, green = y = 0.5), and
        # it is the right way round: red grows to the right, green downwards
        centre = shot[280:320, 380:420].mean((0, 1))
        assert abs(centre[0] - 0.5) < 0.12 and abs(centre[1] - 0.5) < 0.12, centre
        left, right = shot[290:310, 300:320].mean((0, 1)), shot[290:310, 480:500].mean((0, 1))
        top, bottom = shot[220:240, 390:410].mean((0, 1)), shot[360:380, 390:410].mean((0, 1))
        assert right[0] > left[0] + 0.2 and bottom[1] > top[1] + 0.2, (left, right, top, bottom)
    finally:
        page.close()
