"""The web viewer: a viser server, one render loop per connected browser.

Each browser tab gets a `ClientSession`, a thread that renders what its camera sees:

- while the camera moves, a *preview* whose size follows the measured rays per second so
  that frames come at `target_fps` (never larger than the full frame);
- once the camera has been still for `settle_seconds` (0.2 s), the *full* frame (the
  canvas's size, its longer side at most `max_resolution`), rendered in chunks and
  abandoned as soon as the camera moves again.

Renders and training steps share one lock (`Viewer.lock`; the trainer takes it through
`fields.viewer.training.LockedTask`), so a picture never sees a half-updated model. While
training (`Viewer.training_step`, called between steps) the trainer waits whenever a camera
is moving or a frame is being rendered, and asks for a fresh picture every `refresh_seconds`
(sized to take about `refresh_budget` seconds).

A checkpoint that fails to load leaves the server up, with the error in the page's panel and
a field to load another one.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from fields.viewer.camera import ViewCamera
from fields.viewer.views import Cancelled, FieldView, load_view


@dataclass
class Frame:
    """A frame sent to a browser: its camera, picture (H, W, 3) uint8, whether it is the full
    frame, the render mode and the seconds it took (render + encode + send)."""

    version: int
    camera: ViewCamera
    image: np.ndarray
    full: bool
    mode: str
    seconds: float
    sent_at: float


class ClientSession:
    """One browser tab: its camera state and its render thread."""

    def __init__(self, viewer: Viewer, client: Any) -> None:
        self.viewer = viewer
        self.client = client
        self.id = int(client.client_id)
        self.cond = threading.Condition()
        self.version = 0  # bumped by every camera or settings change
        self.preview_version = -1  # version of the last frame sent
        self.full_version = -1  # version of the last full frame sent (or not wanted)
        self.last_move = 0.0
        self.camera: ViewCamera | None = None
        self.closed = False
        self.busy = False
        self.frames: deque[Frame] = deque(maxlen=256)
        self.last_frame: Frame | None = None
        self.errors: list[str] = []
        self.preview_pixels: float | None = None  # steered to reach the target FPS
        self._last_preview_at = 0.0
        self._idle = 0.0  # seconds spent waiting for a camera since the last preview
        with self.sending():
            self._stats = client.gui.add_markdown("*waiting for the first frame*")
        self._stats_at = 0.0
        self.thread = threading.Thread(target=self._loop, name=f"viewer-client-{self.id}",
                                       daemon=True)
        # async: viser awaits it on its event loop, so camera messages are taken one at a
        # time and in order (a plain callback would run in a thread pool, in any order)
        client.camera.on_update(self._on_camera_async)
        try:  # the message that made viser report the client may precede our callback
            self._on_camera(client.camera)
        except (AssertionError, ValueError, TypeError):  # no camera message yet
            pass

    # -- events --
    async def _on_camera_async(self, camera: Any) -> None:
        self._on_camera(camera)

    def _on_camera(self, camera: Any) -> None:
        """Takes the browser's camera (viser's CameraHandle) as the one to render."""
        vc = ViewCamera(tuple(float(v) for v in camera.wxyz),
                        tuple(float(v) for v in camera.position), float(camera.fov),
                        int(camera.image_width), int(camera.image_height))
        with self.cond:
            if vc == self.camera:
                return
            self.camera = vc
            self.version += 1
            self.last_move = time.perf_counter()
            self.cond.notify_all()

    def invalidate(self, full: bool = True) -> None:
        """Renders again at the same camera: the full frame (settings changed), or only a
        preview (`full=False`: a training refresh)."""
        with self.cond:
            full_done = self.full_version == self.version
            self.version += 1
            if not full and full_done:  # a full frame still owed stays owed
                self.full_version = self.version
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def sending(self) -> contextlib.AbstractContextManager[Any]:
        """The context of every write to the client (frames, the stats line, notifications,
        its camera). The client may have just left: viser closes a connection before it
        reports the departure, and may report an arrival (from its thread pool) after the
        client left. Such a write is a harmless no-op, and must not make viser warn about
        writing to a closed connection."""
        return _dead_writes_allowed(self.client)

    # -- state --
    def moving(self) -> bool:
        return time.perf_counter() - self.last_move < self.viewer.settle_seconds

    def pending(self) -> bool:
        """Whether a frame is being rendered or is due."""
        with self.cond:
            return self.busy or (self.camera is not None and (
                self.preview_version != self.version or self.full_version != self.version))

    def fps(self, window: float = 1.0) -> float:
        """Frames per second sent over the last `window` seconds."""
        now = time.perf_counter()
        recent = [f for f in list(self.frames) if now - f.sent_at <= window]
        return len(recent) / window

    # -- the render loop --
    def _loop(self) -> None:
        try:
            self._run()
        finally:
            self.viewer._ended(self)

    def _run(self) -> None:
        while True:
            with self.cond:
                if self.closed:
                    return
                v, cam = self.version, self.camera
                since = time.perf_counter() - self.last_move
                settle = self.viewer.settle_seconds
                want_full = self.full_version != v
                if cam is None or (self.preview_version == v and not want_full):
                    t = time.perf_counter()
                    self.cond.wait(timeout=0.5)
                    self._idle += time.perf_counter() - t
                    continue
                if self.preview_version != v and (since < settle or not want_full):
                    task = "preview"
                elif since < settle:
                    t = time.perf_counter()
                    self.cond.wait(timeout=settle - since)
                    self._idle += time.perf_counter() - t
                    continue
                else:
                    task = "full"
                self.busy = True
            try:
                done = self._render(cam, v, full=task == "full")
            except Exception as e:  # a failing render must not kill the session
                done = True
                self._report(f"render failed: {type(e).__name__}: {e}")
            finally:
                with self.cond:
                    self.busy = False
            if done:
                with self.cond:
                    self.preview_version = max(self.preview_version, v)
                    if task == "full":
                        self.full_version = v

    def _render(self, cam: ViewCamera, version: int, full: bool) -> bool:
        """Renders and sends one frame; False when it was abandoned."""
        viewer = self.viewer
        view = viewer.view
        if view is not None and not view.renders_image:
            with self.sending():
                self._stats.content = "drawn by the browser"
            return True
        if view is None or cam.width < 1 or cam.height < 1:
            return True
        longest = max(cam.width, cam.height)
        full_pixels = cam.width * cam.height * min(1.0, viewer.max_resolution / longest) ** 2
        if full:
            pixels = full_pixels
        elif not self.moving():  # a training refresh: a bounded share of the trainer's time
            pixels = min(full_pixels, viewer.rays_per_second * viewer.refresh_budget)
        else:
            if self.preview_pixels is None:
                self.preview_pixels = viewer.rays_per_second / max(viewer.target_fps, 0.1)
            pixels = min(full_pixels, self.preview_pixels)
        w, h = cam.image_size(pixels)
        mode = viewer.mode
        if full:
            def cancel() -> bool:
                return self.closed or self.version != version
        else:
            def cancel() -> bool:
                return self.closed
        t0 = time.perf_counter()
        with viewer.lock:
            if view is not viewer.view:
                return True
            view.fit_chunk(viewer.rays_per_second)
            try:
                picture = view.render(cam.cameras(w, h), mode, cancel, preview=not full)
            except Cancelled:
                return False
        image = (np.clip(picture, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        if self.closed or view is not viewer.view:  # the field changed meanwhile
            return False
        with self.sending():
            self.client.scene.set_background_image(image, format="jpeg",
                                                   jpeg_quality=90 if full else 75)
        now = time.perf_counter()
        seconds = now - t0
        viewer.update_speed(w * h, seconds)
        if not full and self.moving():
            self._steer_preview(w * h, seconds, now)
        frame = Frame(version, cam, image, full, mode, seconds, now)
        self.frames.append(frame)
        self.last_frame = frame
        if now - self._stats_at > 0.5 or full:
            self._stats_at = now
            with self.sending():
                self._stats.content = (
                    f"{self.fps():.1f} FPS · {w}×{h}{' (full)' if full else ''} · "
                    f"{viewer.rays_per_second / 1e3:.0f}k rays/s"
                )
        return True

    def _steer_preview(self, pixels: int, seconds: float, now: float) -> None:
        """Scales the preview's pixel count so that the loop's own time between consecutive
        previews (render, encode, send and the loop; not the time spent waiting for the
        browser's next camera) is `frame_share` / target_fps: the rest of the frame period is
        left to the browser and the network, which share the machine when the browser runs on
        it."""
        interval = now - self._last_preview_at - self._idle
        if interval > 4.0 * seconds + 0.1 or interval < seconds:  # not consecutive
            interval = seconds
        self._last_preview_at, self._idle = now, 0.0
        budget = self.viewer.frame_share / max(self.viewer.target_fps, 0.1)
        ratio = budget / max(interval, 1e-4)
        self.preview_pixels = max(64.0, pixels * min(max(ratio, 0.5), 1.5) ** 0.7)

    def _report(self, message: str) -> None:
        self.errors.append(message)
        with self.sending():
            self._stats.content = f"**{message}**"


class Viewer:
    """A web viewer for one field (`FieldView`) at http://host:port.

    Args:
        view: what to show (None: show `error`, or nothing until `set_view`).
        host, port: where to listen (port 0: any free port; see `port`).
        max_resolution: longer side, in pixels, of the full frame.
        target_fps: frames per second to aim at while the camera moves.
        settle_seconds: how long the camera must be still before the full frame.
        refresh_seconds: during training, seconds between refreshed pictures.
        refresh_budget: seconds of rendering each refresh may take (training waits meanwhile).
        frame_share: the share of a moving frame's period (1 / target_fps) that the server's
            own work may take; the rest is left to the browser, which on a machine without a
            GPU renders the page on the same cores (with 0.5, headless chromium on 2 cores
            keeps up with 10+ camera updates per second; with 0.75 it does not).
    """

    def __init__(self, view: FieldView | None = None, *, host: str = "127.0.0.1",
                 port: int = 7007, max_resolution: int = 512, target_fps: float = 12.0,
                 settle_seconds: float = 0.2, refresh_seconds: float = 2.0,
                 refresh_budget: float = 0.25, frame_share: float = 0.5,
                 error: str | None = None, source: str = "") -> None:
        import viser

        if not 16 <= int(max_resolution) <= 4096:
            raise ValueError(f"Viewer: max_resolution must be in [16, 4096], got {max_resolution}")
        if not 1.0 <= float(target_fps) <= 60.0:
            raise ValueError(f"Viewer: target_fps must be in [1, 60], got {target_fps}")
        if not 0.0 < frame_share <= 1.0:
            raise ValueError(f"Viewer: frame_share must be in (0, 1], got {frame_share}")
        _check_address(host)
        # (viser moves on to the next port when `port` is taken: `url` says where it is)
        self.server = viser.ViserServer(host=host, port=port, verbose=False)
        self.host, self.port = host, int(self.server.get_port())
        self.lock = threading.RLock()
        self.max_resolution = int(max_resolution)
        self.target_fps = float(target_fps)
        self.settle_seconds = float(settle_seconds)
        self.refresh_seconds = float(refresh_seconds)
        self.refresh_budget = float(refresh_budget)
        self.frame_share = float(frame_share)
        self.rays_per_second = 5e4  # first guess; measured from then on
        self.view: FieldView | None = None
        self.error: str | None = None
        self.mode = "rgb"
        self.sessions: dict[int, ClientSession] = {}
        self._sessions_lock = threading.Lock()
        self._gone: set[int] = set()
        # sessions whose client left and whose render loop may still be finishing a frame:
        # `close` waits for them too (a daemon thread still inside torch when the
        # interpreter exits aborts the process: "terminate called without an active
        # exception", exit code -6 instead of 0 after Ctrl-C)
        self._leaving: list[ClientSession] = []
        self._closed = False
        self._field_controls: list[Any] = []
        self._control_by_name: dict[str, Any] = {}
        self._training: dict[str, Any] | None = None
        self._last_refresh = 0.0
        self._build_gui(source)
        self._animator = threading.Thread(target=self._animate, name="viewer-animation",
                                          daemon=True)
        self._animator.start()
        self.server.on_client_connect(self._on_connect)
        self.server.on_client_disconnect(self._on_disconnect)
        if view is not None:
            self.set_view(view)
        elif error is not None:
            self.set_error(error)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- GUI --
    def _build_gui(self, source: str) -> None:
        gui = self.server.gui
        gui.configure_theme(control_layout="floating", show_share_button=False)
        self._title = gui.add_markdown("**fields** viewer")
        self._mode_box = gui.add_dropdown("Show", ("rgb",), initial_value="rgb")
        self._res_box = gui.add_slider("Max resolution", 16, max(2048, self.max_resolution),
                                       16, self.max_resolution)
        self._fps_box = gui.add_slider("Moving FPS target", 1, 60, 1, round(self.target_fps))

        @self._mode_box.on_update
        def _(_: Any) -> None:
            self.mode = str(self._mode_box.value)
            self.invalidate()

        @self._res_box.on_update
        def _(_: Any) -> None:
            self.max_resolution = int(self._res_box.value)
            self.invalidate()

        @self._fps_box.on_update
        def _(_: Any) -> None:
            self.target_fps = float(self._fps_box.value)

        self._field_folder = gui.add_folder("Field")
        with gui.add_folder("Checkpoint", expand_by_default=False):
            self._path_box = gui.add_text("Path", initial_value=source)
            load = gui.add_button("Load")

        @load.on_click
        def _(_: Any) -> None:
            self.load(str(self._path_box.value))

    def _remove_controls(self) -> None:
        for handle in self._field_controls:
            handle.remove()
        self._field_controls = []
        self._control_by_name = {}

    def _animate(self, tick: float = 0.1) -> None:
        """Every `tick` seconds, lets the view advance its settings (`FieldView.advance`: a
        playing time slider); what changed is shown in its control and rendered again."""
        last = time.perf_counter()
        while not self._closed:
            time.sleep(tick)
            now = time.perf_counter()
            dt, last = now - last, now
            view = self.view
            if view is None or self._closed:
                continue
            with self.lock:
                before = dict(view.settings)
                moved = view.advance(dt)
                changed = {k: v for k, v in view.settings.items() if before.get(k) != v}
            if not moved:
                continue
            # Only what advance changed is written back: a snapshot of every setting would
            # undo a control the user changed meanwhile (unchecking "play" re-checked).
            for name, handle in list(self._control_by_name.items()):
                if name in changed and view.settings.get(name) == changed[name] \
                        and handle.value != changed[name]:
                    handle.value = changed[name]  # its callback invalidates the frame
            self.invalidate()

    def _add_controls(self, view: FieldView) -> None:
        self._remove_controls()
        gui = self.server.gui
        with self._field_folder:
            for spec in view.controls():
                name = spec["name"]
                view.settings[name] = spec["value"]
                if spec["type"] == "slider":
                    h = gui.add_slider(name, spec["min"], spec["max"], spec["step"],
                                       spec["value"])
                elif spec["type"] == "checkbox":
                    h = gui.add_checkbox(name, spec["value"])
                elif spec["type"] == "dropdown":
                    h = gui.add_dropdown(name, tuple(spec["options"]),
                                         initial_value=spec["value"])
                else:
                    raise ValueError(f"{type(view).__name__}.controls: unknown control type "
                                     f"{spec['type']!r}")
                h.on_update(self._setting_callback(view, name, h))
                self._field_controls.append(h)
                self._control_by_name[name] = h

    def _setting_callback(self, view: FieldView, name: str, handle: Any) -> Callable:
        def callback(_: Any) -> None:
            self.invalidate()  # abandons a full frame in progress, which holds the lock
            with self.lock:
                view.settings[name] = handle.value
                if not view.renders_image:
                    view.setup_scene(self.server)
            self.invalidate()
        return callback

    # -- what is shown --
    def set_view(self, view: FieldView) -> None:
        """Shows `view` in every connected browser (and those that connect later)."""
        self.invalidate()  # abandons a full frame in progress, which holds the lock
        with self.lock:
            self.view, self.error = view, None
            self.server.scene.reset()
            self._add_controls(view)
            view.setup_scene(self.server)
            self._title.content = view.describe()
            self._mode_box.options = view.modes
            self.mode = view.modes[0]
            self._mode_box.value = self.mode
            cam = view.initial_camera()
            self.server.scene.set_up_direction(cam["up"])
            ic = self.server.initial_camera
            ic.position, ic.look_at, ic.up = cam["position"], cam["look_at"], cam["up"]
            if "fov" in cam:
                ic.fov = float(cam["fov"])
            if not view.renders_image:
                self.server.scene.set_background_image(None)
        for s in self._session_list():
            with s.sending():
                s.client.camera.position = cam["position"]
                s.client.camera.look_at = cam["look_at"]
                s.client.camera.up_direction = cam["up"]
                if "fov" in cam:
                    s.client.camera.fov = float(cam["fov"])
        self.invalidate()

    def set_error(self, message: str) -> None:
        """Shows `message` in the page instead of a field (the server keeps running)."""
        with self.lock:
            self.view, self.error = None, message
            self._remove_controls()
            self.server.scene.reset()
            self.server.scene.set_background_image(None)
            self._title.content = f"**Could not load the checkpoint**\n\n`{message}`"
        for s in self._session_list():
            with s.sending():
                s.client.add_notification("Could not load the checkpoint", message,
                                          color="red")

    def load(self, path: str) -> bool:
        """Loads a checkpoint and shows it; on failure shows the error. True on success."""
        try:
            view = load_view(path)
            self.set_view(view)
        except Exception as e:
            message = str(e) or type(e).__name__
            self.set_error(message if path in message else f"{path}: {message}")
            return False
        self._path_box.value = path
        return True

    def invalidate(self, full: bool = True) -> None:
        for s in self._session_list():
            s.invalidate(full)

    # -- clients --
    def _on_connect(self, client: Any) -> None:
        session = ClientSession(self, client)
        with self._sessions_lock:
            if self._closed or session.id in self._gone:
                self._gone.discard(session.id)
                return
            self.sessions[session.id] = session
            session.thread.start()  # under the lock: `close` joins only started threads
        if self.error is not None:
            with session.sending():
                client.add_notification("Could not load the checkpoint", self.error,
                                        color="red")

    def _on_disconnect(self, client: Any) -> None:
        with self._sessions_lock:
            session = self.sessions.pop(int(client.client_id), None)
            if session is None:  # viser's pool ran the disconnect before the connect
                self._gone.add(int(client.client_id))
            elif session.thread.is_alive():
                self._leaving.append(session)  # until its render loop ends (`_ended`)
        if session is not None:
            session.close()

    def _ended(self, session: ClientSession) -> None:
        """Called by a session's render loop as it ends."""
        with self._sessions_lock:
            if session in self._leaving:
                self._leaving.remove(session)

    def _session_list(self) -> list[ClientSession]:
        with self._sessions_lock:
            return list(self.sessions.values())

    def update_speed(self, pixels: int, seconds: float) -> None:
        """Folds one frame's rays per second (render + encode + send) into the estimate."""
        if seconds > 0 and pixels > 0:
            rps = pixels / seconds
            self.rays_per_second = 0.6 * self.rays_per_second + 0.4 * rps

    def moving(self) -> bool:
        return any(s.moving() for s in self._session_list())

    def busy(self) -> bool:
        """Whether a camera moves or a frame is being rendered or is due."""
        return any(s.moving() or s.pending() for s in self._session_list())

    # -- training --
    def enable_training(self) -> None:
        """Adds the training panel: step, loss, PSNR, and a pause switch."""
        gui = self.server.gui
        with gui.add_folder("Training"):
            self._train_md = gui.add_markdown("*starting*")
            self._pause = gui.add_checkbox("Pause training", False)
        self._training = {"at": 0.0}

    def training_step(self, step: int, seconds: float, scalars: dict[str, float],
                      max_render_wait: float = 10.0) -> None:
        """Called by the trainer between steps: shows progress, waits while a camera moves or
        while paused (for as long as that lasts) and while a frame renders (at most
        `max_render_wait` seconds), and asks for a fresh picture now and then."""
        if self._training is None:
            self.enable_training()
        now = time.perf_counter()
        assert self._training is not None
        if now - self._training["at"] > 0.5:
            self._training["at"] = now
            parts = [f"step **{step}**", f"{seconds:.0f} s"]
            if "loss" in scalars:
                parts.append(f"loss {scalars['loss']:.4g}")
            if "psnr" in scalars:
                parts.append(f"PSNR {scalars['psnr']:.2f} dB")
            self._train_md.content = " · ".join(parts)
        if now - self._last_refresh > self.refresh_seconds:
            self._last_refresh = now
            self.invalidate(full=False)
        started = time.perf_counter()
        while not self._closed:
            if bool(self._pause.value) or self.moving():
                started = time.perf_counter()
            elif not self.busy() or time.perf_counter() - started > max_render_wait:
                break
            time.sleep(0.01)

    def training_done(self, message: str) -> None:
        if self._training is None:
            self.enable_training()
        self._train_md.content = message
        self.invalidate()

    # -- life cycle --
    def close(self) -> None:
        """Stops every render loop and the server (again: nothing)."""
        with self._sessions_lock:
            if self._closed:
                return
            self._closed = True
            sessions = list(self.sessions.values()) + self._leaving
            self.sessions.clear()
            self._leaving = []
        for s in sessions:
            s.close()
        for s in sessions:
            s.thread.join(timeout=5.0)
        self._animator.join(timeout=5.0)
        self.server.stop()

    def wait(self) -> None:
        """Blocks until Ctrl-C (then closes the server)."""
        try:
            while not self._closed:
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
        finally:
            self.close()


def _dead_writes_allowed(client: Any) -> contextlib.AbstractContextManager[Any]:
    """A context in which writes to `client` after its connection closed pass silently:
    viser's `sanctioned_dead_writes` on the client's message buffer (viser uses it for its
    own clean-up writes), or nothing where a client has no such buffer (a stand-in)."""
    try:
        return client._websock_connection.get_message_buffer().sanctioned_dead_writes()
    except AttributeError:
        return contextlib.nullcontext()


def _check_address(host: str) -> None:
    """OSError naming `host` when no port can be bound there (viser would retry forever)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)
        family, _, _, _, addr = infos[0]
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind(addr)
    except OSError as e:
        raise OSError(f"cannot listen on {host}: {e}") from e


def _free_port(host: str) -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
