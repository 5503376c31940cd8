"""The viewer under churn (a soak test): while a field trains with the real training loop,
clients come and go in every way a network allows, and the viewer must keep serving.

Each round, against a viewer on 127.0.0.1:

- raw websocket clients speak viser's protocol as the page does (camera messages, GUI
  updates, frames back): they connect, move their cameras, switch the view ("Show"), and
  leave cleanly or abruptly (a TCP reset mid-stream, right after their first camera, half
  way through a message), or hang half-open (half an HTTP upgrade; a camera sent, then
  never reading again);
- with Debian's chromium (headless, driven by Playwright; skipped, saying why, where it is
  absent), browser tabs open, drag the camera, switch the view in the panel, reload, leave.

After each round a fresh client must get a frame within `RESPONSIVE_SECONDS`, every session
of the departed clients (and its render thread) must be gone, training must still step, and
at the end the process's memory must be within `RSS_GROWTH` of what it was after a warm-up
round (and, in the long soaks, level off: `RSS_LEVEL`); no object may keep a departed
client's session. No server thread may print a traceback or warn (stderr, logs and
warnings are read). The `fields fit nerf --viewer` process, churned the same way, must
still stop on Ctrl-C with the exit code the CLI documents (0 once training is done).

The default suite runs a few rounds (about half a minute on 2 cores); the `slow` variants
run many more.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from test_viewer import opencv_look_at, wait_for

from fields.viewer import FieldView

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# as in test_viewer_browser.py: software WebGL, no background connections
CHROMIUM_ARGS = ["--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--enable-unsafe-swiftshader"]
VIEWPORT = {"width": 480, "height": 360}
RESPONSIVE_SECONDS = 20.0  # a fresh client's first frame after a round, at the latest
# Bytes the process may grow between the warm-up and the last round. Most of what it grows
# is glibc's: every client's render loop is a thread, each thread's allocations go to one
# of up to 8 malloc arenas per core, and each arena keeps its high-water mark (about 200 MiB
# on 2 cores before it levels off; with MALLOC_ARENA_MAX=1, 50 MiB). A leak of anything
# the sessions hold is caught exactly by `assert_clients_gone`; this bound is the backstop.
RSS_GROWTH = 320 * 2**20
# ... and over the second half of a long soak, where it must have levelled off
RSS_LEVEL = 64 * 2**20
# the raw clients' own log (a reset connection's reader complains): not the server's
CLIENT_LOG = logging.getLogger("test_viewer_soak.client")
CLIENT_LOG.setLevel(logging.CRITICAL)


# -- a websocket client that speaks viser's protocol --


def decode(raw: bytes) -> list[dict[str, Any]]:
    """The messages of one server frame (viser's wire format: the msgpack's size, its
    zstd-compressed size, the compressed msgpack, then raw buffers)."""
    import msgspec
    import zstandard

    size, packed = int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:16], "little")
    inner = zstandard.ZstdDecompressor().decompress(raw[16:16 + packed], max_output_size=size)
    return msgspec.msgpack.decode(inner)["messages"]


def encode(message: dict[str, Any]) -> bytes:
    import msgspec

    return msgspec.msgpack.encode(message)


def subprotocol() -> str:
    import viser

    return f"viser-v{viser.__version__}"


class RawClient:
    """A websocket client that talks to the viewer like viser's page: it sends its camera and
    GUI changes and reads the server's messages (frames, the panel, the initial camera)."""

    def __init__(self, url: str, protocol: str | None = None) -> None:
        from websockets.sync.client import connect

        self.ws = connect(url.replace("http://", "ws://"), open_timeout=RESPONSIVE_SECONDS,
                          subprotocols=[protocol or subprotocol()], max_size=None,
                          logger=CLIENT_LOG)
        self.gui: dict[str, str] = {}  # label -> uuid
        self.options: dict[str, list[str]] = {}  # dropdown uuid -> options
        self.markdown: dict[str, str] = {}  # uuid -> text
        self.initial: dict[str, Any] = {}  # position, look_at, up
        self.frames = 0

    # -- sending --
    def send_camera(self, angle: float, width: int = 320, height: int = 240) -> None:
        """A camera on the orbit of the server's initial camera, turned by `angle` radians
        about its up direction, on a canvas of width x height."""
        pos, target, up = (np.asarray(self.initial[k], dtype=np.float64)
                           for k in ("position", "look_at", "up"))
        up = up / np.linalg.norm(up)
        pos = target + Rotation.from_rotvec(angle * up).apply(pos - target)
        self.ws.send(encode({
            "type": "ViewerCameraMessage",
            "wxyz": [float(v) for v in opencv_look_at(pos, target, up)],
            "position": pos.tolist(), "fov": 0.8, "near": 0.01, "far": 100.0,
            "image_height": height, "image_width": width, "look_at": target.tolist(),
            "up_direction": up.tolist()}))

    def set_gui(self, label: str, value: Any) -> None:
        """What the page sends when a control of the panel changes."""
        self.ws.send(encode({"type": "GuiUpdateMessage", "uuid": self.gui[label],
                             "updates": {"value": value}}))

    # -- receiving --
    def _note(self, m: dict[str, Any]) -> None:
        kind = m["type"]
        if kind == "BackgroundImageMessage" and m.get("rgb_data"):
            self.frames += 1
        elif kind == "SetCameraPositionMessage":
            self.initial["position"] = m["position"]
        elif kind == "SetCameraLookAtMessage":
            self.initial["look_at"] = m["look_at"]
        elif kind == "SetCameraUpDirectionMessage":
            self.initial["up"] = m["position"]  # (sic: viser's field name)
        elif kind.startswith("Gui") and "props" in m and isinstance(m["props"], dict):
            if "label" in m["props"]:
                self.gui[m["props"]["label"]] = m["uuid"]
            if "options" in m["props"]:
                self.options[m["uuid"]] = list(m["props"]["options"])
            if "_markdown" in m["props"]:
                self.markdown[m["uuid"]] = m["props"]["_markdown"]
        elif kind == "GuiUpdateMessage":
            if "options" in m["updates"]:
                self.options[m["uuid"]] = list(m["updates"]["options"])
            if "_markdown" in m["updates"]:
                self.markdown[m["uuid"]] = m["updates"]["_markdown"]

    def read_until(self, done: Callable[[], bool], seconds: float) -> bool:
        """Reads messages until `done()` or `seconds` have passed; whether `done()`."""
        deadline = time.perf_counter() + seconds
        while not done():
            left = deadline - time.perf_counter()
            if left <= 0:
                return False
            try:
                raw = self.ws.recv(timeout=left)
            except TimeoutError:
                return False
            for m in decode(raw):
                self._note(m)
        return True

    def ready(self, seconds: float = RESPONSIVE_SECONDS) -> RawClient:
        """Waits for the server's replay (the initial camera and the panel)."""
        assert self.read_until(lambda: len(self.initial) == 3 and "Show" in self.gui,
                               seconds), "no initial camera / panel from the server"
        return self

    def wait_frame(self, seconds: float = RESPONSIVE_SECONDS) -> bool:
        """Whether a new frame arrives within `seconds`."""
        n = self.frames
        return self.read_until(lambda: self.frames > n, seconds)

    def modes(self) -> list[str]:
        return self.options[self.gui["Show"]]

    def training_step(self) -> int:
        """The step in the panel's training line (-1 before the first)."""
        import re

        steps = [int(m.group(1)) for text in self.markdown.values()
                 for m in [re.search(r"step \*\*(\d+)\*\*", text)] if m]
        return max(steps, default=-1)

    # -- leaving --
    def close(self) -> None:
        self.ws.close()

    def reset(self) -> None:
        """Leaves abruptly: no close frame, the connection shut and then reset."""
        reset_socket(self.ws.socket)
        self.ws.close_socket()


def reset_socket(sock: socket.socket) -> None:
    """Shuts `sock` (which wakes a thread blocked reading it: a socket closed under such a
    thread stays open in the kernel, and the server would never hear of it) and closes it
    with a TCP reset (SO_LINGER 0)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def half_open_handshake(url: str) -> socket.socket:
    """A TCP connection that sends half of the websocket upgrade request and stalls."""
    sock = socket.create_connection(host_port(url), timeout=5)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
    return sock


def mid_message(url: str, angle: float) -> None:
    """A client that sends its camera, then the first kilobyte of a 64 KiB message, then
    resets the connection."""
    c = RawClient(url).ready()
    c.send_camera(angle)
    frame = bytes([0x82, 0x80 | 126, 0xFF, 0xFF, 1, 2, 3, 4]) + os.urandom(1024)
    c.ws.socket.sendall(frame)
    c.reset()


def raw_round(url: str, k: int) -> None:
    """One round of websocket churn against the viewer at `url` (returns with every client
    of the round gone)."""
    # clients that look, move their cameras, switch the view, and leave in three ways
    clients = [RawClient(url).ready() for _ in range(3)]
    for i, c in enumerate(clients):
        c.send_camera(0.3 * k + i)
    for c in clients:
        assert c.wait_frame(), "a connected client got no frame"
    for j in range(8):
        for i, c in enumerate(clients):
            c.send_camera(0.3 * k + i + 0.05 * j)
        time.sleep(0.03)
    modes = clients[0].modes()
    clients[0].set_gui("Show", modes[k % len(modes)])
    clients[1].send_camera(0.3 * k, width=0, height=0)  # a hidden tab's empty canvas
    clients[2].reset()  # mid-stream, frames in flight
    clients[1].close()
    # connect and leave at once: the connect and the disconnect race in viser's thread pool
    for i in range(3):
        c = RawClient(url).ready()
        c.send_camera(0.3 * k - i)
        (c.reset if i % 2 else c.close)()
    # half a message; half a handshake; a client that never sends a camera; one of another
    # viser version; one that sends a camera and never reads again
    mid_message(url, 0.3 * k)
    stalled = half_open_handshake(url)
    silent = RawClient(url)
    try:
        RawClient(url, protocol="viser-v0.0.0").read_until(lambda: False, 1.0)
    except Exception:  # the server closes it (1002): the expected way
        pass
    deaf = RawClient(url).ready()
    deaf.send_camera(0.3 * k + 0.5)
    clients[0].send_camera(0.3 * k + 0.7)  # the view switch's frame
    assert clients[0].wait_frame()
    time.sleep(0.3)
    clients[0].close()
    deaf.reset()
    silent.reset()
    stalled.close()


def fresh_frame_seconds(url: str, k: int) -> float:
    """Seconds a newly connected client waits for its first frame (asserts it comes within
    `RESPONSIVE_SECONDS`)."""
    start = time.perf_counter()
    c = RawClient(url).ready()
    try:
        c.send_camera(0.3 * k + 0.1)
        assert c.wait_frame(), f"no frame for a fresh client within {RESPONSIVE_SECONDS} s"
        return time.perf_counter() - start
    finally:
        c.close()


# -- the browser side --


@pytest.fixture(scope="module")
def browser():
    """Headless chromium (Playwright), shared by the module's tests; skips, saying why,
    where it is absent."""
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (`make setup` installs it with apt "
                    "where apt is available)")
    sync_api = pytest.importorskip(
        "playwright.sync_api",
        reason="playwright (Python) is not installed: `make setup` installs it")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def drag(page: Any, k: int) -> None:
    """Orbits the page's camera: a mouse drag across its canvas."""
    x, y = 150 + 10 * (k % 5), 200
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 120, y - 30, steps=10)
    page.mouse.up()


def browser_round(browser: Any, url: str, k: int, reload: bool = True) -> None:
    """One round of tab churn: two tabs open, drag their cameras, one switches the view in
    the panel, then one reloads (with `reload`) and drags again, one navigates away, and
    both close."""
    pages = [browser.new_page(viewport=VIEWPORT) for _ in range(2)]
    try:
        for p in pages:
            p.goto(url)
        for p in pages:
            p.get_by_text("Connected").first.wait_for(timeout=RESPONSIVE_SECONDS * 1000)
        for p in pages:
            drag(p, k)
        show = pages[0].get_by_role("combobox", name="Show")
        show.click()
        options = pages[0].get_by_role("option")
        options.nth(k % options.count()).click()
        if reload:
            pages[1].reload()
            pages[1].get_by_text("Connected").first.wait_for(
                timeout=RESPONSIVE_SECONDS * 1000)
            drag(pages[1], k + 1)
        pages[0].goto("about:blank")
    finally:
        for p in pages:
            p.close()


def fresh_tab_seconds(browser: Any, url: str, viewer: Any) -> float:
    """Seconds a new tab waits for the page and its first frame (asserts both come within
    `RESPONSIVE_SECONDS`)."""
    start = time.perf_counter()
    page = browser.new_page(viewport=VIEWPORT)
    try:
        page.goto(url, timeout=RESPONSIVE_SECONDS * 1000)
        page.get_by_text("Connected").first.wait_for(timeout=RESPONSIVE_SECONDS * 1000)
        assert wait_for(lambda: any(s.last_frame is not None for s in viewer._session_list()),
                        RESPONSIVE_SECONDS), "the fresh tab got no frame"
        return time.perf_counter() - start
    finally:
        page.close()


# -- a field that trains while the viewer shows it --


class Training:
    """A tiny NeRF training with the real loop (`fields.train.train`) in a thread, shown
    live by a `Viewer`, as `fields fit nerf --viewer` does it."""

    def __init__(self, scene_dir: Any) -> None:
        from conftest import tiny_config

        from fields.data import load_scene
        from fields.nerf import NerfTask, scene_info
        from fields.nerf.view import NerfView
        from fields.train import TrainConfig, seed_everything, train
        from fields.viewer import Viewer
        from fields.viewer.training import LockedTask

        scene = load_scene(scene_dir)
        seed_everything(0)
        task = NerfTask(scene, tiny_config(), seed=0)
        view = NerfView(task.model, task.grid, task.settings, scene.background,
                        scene_info(scene, task.config), "tiny")
        self.viewer = Viewer(view, port=0, max_resolution=64, settle_seconds=0.2,
                             refresh_seconds=0.5, refresh_budget=0.05)
        self.viewer.enable_training()
        self.step = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        stop = self._stop

        class Stoppable(LockedTask):
            @property
            def done(self) -> bool:
                return stop.is_set()

        def on_step(state: Any) -> None:
            self.viewer.training_step(state.step, state.seconds, state.last)
            self.step = state.step

        def run() -> None:
            try:
                train(Stoppable(task, self.viewer.lock),
                      TrainConfig(steps=10**7, max_seconds=3600, eval_every=0,
                                  checkpoint_every=0), on_step=on_step, show_progress=False)
            except BaseException as e:  # reported by the test
                self.error = e

        self.thread = threading.Thread(target=run, name="soak-training", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=30)
        self.viewer.close()


@pytest.fixture
def training(tiny_scene_dir):
    t = Training(tiny_scene_dir)
    try:
        assert wait_for(lambda: t.step > 0, 60), "training did not start"
        yield t
    finally:
        t.close()
    assert t.error is None, t.error
    assert not t.thread.is_alive()


def rss() -> int:
    """This process's resident memory, bytes."""
    gc.collect()
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def client_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("viewer-client-")}


def live_sessions() -> int:
    """How many `ClientSession` objects exist (kept by anything at all)."""
    from fields.viewer.server import ClientSession

    gc.collect()
    return sum(type(o) is ClientSession for o in gc.get_objects())


def assert_clients_gone(viewer: Any) -> None:
    """Every client has left: no session, no render thread, no client in viser, nothing
    that keeps a session (and its frames) alive."""
    assert wait_for(lambda: not viewer.sessions and not viewer.server.get_clients()
                    and not client_threads(), 15), (
        f"sessions {list(viewer.sessions)}, viser clients {list(viewer.server.get_clients())}, "
        f"render threads {client_threads()}")
    assert not viewer._gone, f"ids of departed clients kept: {viewer._gone}"
    assert wait_for(lambda: live_sessions() == 0, 5), (
        f"{live_sessions()} sessions of departed clients are still referenced")


def assert_quiet(capfd: Any, caplog: Any, recwarn: Any) -> None:
    """No traceback on stderr, no error logged, no warning from the viewer or viser."""
    err = capfd.readouterr().err
    for sign in ("Traceback", "Task failed", "exception was never retrieved"):
        assert sign not in err, err
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
    ours = [f"{w.filename}:{w.lineno}: {w.message}" for w in recwarn
            if "viser" in w.filename or os.path.join("fields", "viewer") in w.filename
            or "connection" in str(w.message)]
    assert not ours, ours


def soak(training: Training, rounds: int, churn: Callable[[int], None],
         fresh: Callable[[int], float]) -> dict[str, Any]:
    """A warm-up round, then `rounds` rounds of `churn(k)`; after each, every client must
    be gone and a fresh one served (`fresh(k)`: its seconds). Returns what was measured."""
    viewer = training.viewer
    churn(0)
    assert_clients_gone(viewer)
    fresh(0)
    assert_clients_gone(viewer)
    sizes, step_warm = [rss()], training.step
    latencies = []
    for k in range(1, rounds + 1):
        churn(k)
        assert_clients_gone(viewer)
        latencies.append(fresh(k))
        assert_clients_gone(viewer)
        assert training.thread.is_alive() and training.error is None, training.error
        sizes.append(rss())
    # training steps between rounds (it waits only while a camera moves or a frame renders)
    assert wait_for(lambda: training.step > step_warm + 5, 30), (step_warm, training.step)
    mib = [round(b / 2**20) for b in sizes]
    assert sizes[-1] - sizes[0] < RSS_GROWTH, f"resident MiB after each round: {mib}"
    if rounds >= 10:
        assert sizes[-1] - sizes[rounds // 2] < RSS_LEVEL, f"resident MiB after each round: {mib}"
    return {"latencies": latencies, "rss_mib": mib, "steps": training.step - step_warm}


@pytest.mark.parametrize("rounds", [3, pytest.param(30, marks=pytest.mark.slow)])
def test_websocket_churn_while_training(training, rounds, capfd, caplog, recwarn):
    url = training.viewer.url
    got = soak(training, rounds, lambda k: raw_round(url, k),
               lambda k: fresh_frame_seconds(url, k))
    with capfd.disabled():
        print(got)
    assert_quiet(capfd, caplog, recwarn)


@pytest.mark.parametrize("rounds", [1, pytest.param(20, marks=pytest.mark.slow)])
def test_browser_tab_churn_while_training(browser, training, rounds, capfd, caplog, recwarn):
    url, viewer = training.viewer.url, training.viewer

    def churn(k: int) -> None:
        browser_round(browser, url, k, reload=rounds > 1)
        raw_round(url, k)

    def fresh(k: int) -> float:  # a new tab after every round (the default: the last)
        if rounds > 1 or k == rounds:
            return fresh_tab_seconds(browser, url, viewer)
        return fresh_frame_seconds(url, k)

    got = soak(training, rounds, churn, fresh)
    with capfd.disabled():
        print(got)
    assert_quiet(capfd, caplog, recwarn)


# -- defects the soak found, one at a time --


class SlowView(FieldView):
    """A field whose every picture takes `seconds` and ignores `cancel` (like a preview);
    `started` is set when a render begins."""

    kind = "slow"

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.started = threading.Event()

    def render(self, camera: Any, mode: str, cancel: Any, preview: bool = False) -> np.ndarray:
        self.started.set()
        time.sleep(self.seconds)
        return np.full((int(camera.height), int(camera.width), 3), 0.5, np.float32)


def test_close_waits_for_the_render_loops_of_clients_that_left():
    """A client leaves while its frame renders, then the viewer closes (Ctrl-C right after
    a tab closed): `close` must wait for that render loop too. It did not (it joined only
    the sessions of connected clients), and a daemon render thread still inside torch when
    the interpreter exited aborted `fields view` / `fields fit --viewer` ("terminate called
    without an active exception", exit code -6 instead of 0)."""
    from fields.viewer import Viewer

    view = SlowView(1.0)
    viewer = Viewer(view, port=0, max_resolution=32)
    try:
        c = RawClient(viewer.url).ready()
        c.send_camera(0.0)
        assert view.started.wait(RESPONSIVE_SECONDS), "no render started"
        c.close()
        assert wait_for(lambda: not viewer.sessions, 10)
        assert client_threads(), "the render loop ended before the test could close"
    finally:
        viewer.close()
    assert not client_threads(), "close() returned while a render loop was still running"


def test_clients_that_leave_at_once_leave_no_warning(recwarn):
    """Clients that send their camera and leave at once: viser reports their arrival from a
    thread pool after their connection closed, and the session's first write (its stats
    line) warned "Queued a GuiMarkdownMessage on a closed connection" on the console of
    `fields view`. Nothing is kept of them either."""
    from fields.viewer import Viewer

    viewer = Viewer(SlowView(0.0), port=0, max_resolution=32)
    try:
        for i in range(20):
            c = RawClient(viewer.url).ready()
            c.send_camera(0.1 * i)
            (c.reset if i % 2 else c.close)()
        assert_clients_gone(viewer)
        assert fresh_frame_seconds(viewer.url, 0) < RESPONSIVE_SECONDS
        assert_clients_gone(viewer)
    finally:
        viewer.close()
    warned = [str(w.message) for w in recwarn if "closed connection" in str(w.message)]
    assert not warned, warned


@pytest.mark.slow
def test_a_client_that_stops_reading_is_dropped():
    """A client that stops reading (its socket stays open; a machine gone to sleep) stops
    answering viser's keep-alive pings, and its session goes within a minute; meanwhile
    other clients are served."""
    from fields.viewer import Viewer

    viewer = Viewer(SlowView(0.0), port=0, max_resolution=32, settle_seconds=0.05)
    try:
        deaf = RawClient(viewer.url).ready()
        for i in range(40):  # frames enough to fill its reader's queue: it stops reading
            deaf.send_camera(0.05 * i)
            time.sleep(0.1)
        assert fresh_frame_seconds(viewer.url, 1) < RESPONSIVE_SECONDS
        assert wait_for(lambda: not viewer.sessions, 90), "the deaf client was never dropped"
        assert_clients_gone(viewer)
        deaf.reset()
    finally:
        viewer.close()


# -- the command line: Ctrl-C after the churn --


class Cli:
    """`fields ARGS` in a subprocess, its output collected line by line."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "fields.cli", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env={**os.environ, "COLUMNS": "200"})
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_line(self, text: str, seconds: float = 120.0) -> None:
        assert wait_for(lambda: any(text in line for line in self.lines)
                        or self.proc.poll() is not None, seconds), self.output
        assert any(text in line for line in self.lines), self.output

    def interrupt(self, seconds: float = 20.0) -> int:
        """Ctrl-C; the exit code (the process is killed if it does not exit in time)."""
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=seconds)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.reader.join(timeout=5)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()


@pytest.mark.parametrize("rounds", [1, pytest.param(10, marks=pytest.mark.slow)])
def test_fit_nerf_viewer_stops_on_ctrl_c_after_churn(tiny_scene_dir, tmp_path, rounds):
    """`fields fit nerf --viewer`: churned while it trains (the panel's step count must keep
    growing) and after, it still stops on Ctrl-C, with 0 once training is done."""

    from conftest import tiny_config

    from fields.viewer.server import _free_port

    port = _free_port("127.0.0.1")
    url = f"http://127.0.0.1:{port}"
    steps = 60 * rounds
    cli = Cli(["fit", "nerf", "--data", str(tiny_scene_dir), "--output", str(tmp_path / "run"),
               "--steps", str(steps), "--video-frames", "0", "--mesh-resolution", "0",
               "--config", json.dumps(tiny_config().to_dict()),
               "--viewer", "--viewer-port", str(port), "--threads", "1"])
    try:
        cli.wait_line("viewer at")
        watcher = RawClient(url).ready()  # reads the panel's training line throughout
        assert watcher.read_until(lambda: watcher.training_step() >= 0, 60), cli.output
        first = watcher.training_step()
        for k in range(rounds):
            raw_round(url, k)
            fresh_frame_seconds(url, k)
        assert watcher.read_until(lambda: watcher.training_step() > first, 60), (
            f"training stalled at step {first}\n{cli.output}")
        watcher.close()
        cli.wait_line("viewer still at", 300)
        raw_round(url, rounds)
        fresh_frame_seconds(url, rounds)
        code = cli.interrupt()
    finally:
        cli.kill()
    assert code == 0, cli.output
    assert "Traceback" not in cli.output and "Task failed" not in cli.output, cli.output
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["steps"] == steps


@pytest.mark.slow
def test_fields_view_stops_on_ctrl_c_after_churn(request, tiny_nerf):
    """`fields view`: many rounds of websocket clients (and tabs, where chromium is), then
    Ctrl-C exits 0."""
    from fields.viewer.server import _free_port

    try:
        browser = request.getfixturevalue("browser")
    except pytest.skip.Exception:  # no chromium: websocket clients only
        browser = None

    port = _free_port("127.0.0.1")
    url = f"http://127.0.0.1:{port}"
    cli = Cli(["view", str(tiny_nerf), "--port", str(port), "--max-resolution", "64"])
    try:
        cli.wait_line("viewer at")
        for k in range(10):
            if browser is not None:
                browser_round(browser, url, k)
            raw_round(url, k)
            fresh_frame_seconds(url, k)
        code = cli.interrupt()
    finally:
        cli.kill()
    assert code == 0 and "viewer stopped" in cli.output, cli.output
    assert "Traceback" not in cli.output and "Task failed" not in cli.output, cli.output
