"""`fields bench viewer`: frames per second while the camera moves, and the time to the full
frame once it stops, measured end to end with a real browser.

Protocol: a `Viewer` on 127.0.0.1 with its defaults (or the given settings); Debian's
chromium, headless (software WebGL), opens the page at `viewport`; Playwright drags the mouse
over the canvas at up to 60 events per second for `seconds` (an orbit), `drags` times, after
one unreported warm-up drag. While
the camera moves, the frames the server sends to that page are counted (FPS) and their sizes
noted, and so is the rate of camera messages from the browser (frames cannot come faster than
the camera changes: when the FPS equals it, the browser is the limit). After each release,
the time from the last camera message the server received to the full frame sent is the
"full after stop" time. Browser, driver and server share this machine's cores, as they would
for a user viewing on the machine that renders.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

CHROMIUM_ARGS = ("--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--enable-unsafe-swiftshader")


@dataclass
class ViewerBenchRow:
    """One drag of `fields bench viewer`: frame rates while moving and the full frame after."""

    drag: int
    moving_fps: float
    camera_updates_per_s: float  # camera messages from the browser: an upper bound on FPS
    preview_size: str  # median width x height of the frames sent while moving
    preview_frame_ms: float  # median render + encode + send time of those frames
    full_size: str
    full_after_stop_s: float  # last camera message -> full frame sent
    full_frame_s: float  # render + encode + send of the full frame

    def as_dict(self) -> dict:
        return asdict(self)


def _wait(predicate, seconds: float) -> bool:
    t = time.perf_counter()
    while time.perf_counter() - t < seconds:
        if predicate():
            return True
        time.sleep(0.005)
    return False


def bench_viewer(checkpoint: str, *, seconds: float = 5.0, drags: int = 3,
                 viewport: tuple[int, int] = (1280, 720), max_resolution: int = 512,
                 target_fps: float = 12.0, chromium: str = "/usr/bin/chromium",
                 on_row=None) -> list[ViewerBenchRow]:
    """Runs the protocol above; one row per drag."""
    from playwright.sync_api import sync_playwright

    from fields.viewer import Viewer, load_view

    viewer = Viewer(load_view(checkpoint), port=0, max_resolution=max_resolution,
                    target_fps=target_fps)
    rows: list[ViewerBenchRow] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=list(CHROMIUM_ARGS))
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            page.goto(viewer.url)
            if not _wait(lambda: len(viewer.sessions) == 1, 60):
                raise RuntimeError(f"the page at {viewer.url} did not connect")
            session = next(iter(viewer.sessions.values()))
            if not _wait(lambda: session.last_frame is not None and session.last_frame.full, 60):
                raise RuntimeError("no full frame within 60 s of connecting")
            cx, cy = viewport[0] * 0.35, viewport[1] * 0.55
            # warm-up (not reported): the page's first interactions, the preview size's first
            # steering
            page.mouse.move(cx, cy)
            page.mouse.down()
            page.mouse.move(cx + 200, cy, steps=60)
            page.mouse.up()
            _wait(lambda: session.last_frame.full and not session.moving(), 30)
            for k in range(drags):
                page.mouse.move(cx, cy)
                page.mouse.down()
                start = time.perf_counter()
                v_start = None
                i = 0
                while time.perf_counter() - start < seconds:
                    i += 1
                    # an orbit that keeps turning one way, then back
                    dx = 240 * ((i % 240) / 240 if (i // 240) % 2 == 0 else 1 - (i % 240) / 240)
                    page.mouse.move(cx + dx - 120 * (k % 2), cy + 20 * ((i // 30) % 2))
                    if v_start is None and time.perf_counter() - start >= 0.3:
                        v_start = session.version
                    time.sleep(1 / 60)
                v_end = session.version
                end = time.perf_counter()
                page.mouse.up()
                moving = [f for f in list(session.frames) if start + 0.3 <= f.sent_at <= end]
                if not _wait(lambda: session.last_frame.full and session.last_frame.version
                             == session.version and not session.moving(), 30):
                    raise RuntimeError("no full frame within 30 s of the camera stopping")
                full = session.last_frame
                window = end - (start + 0.3)
                sizes = sorted(f.image.shape[1] * f.image.shape[0] for f in moving) or [0]
                mid = [f for f in moving if f.image.shape[1] * f.image.shape[0]
                       == sizes[len(sizes) // 2]]
                row = ViewerBenchRow(
                    drag=k,
                    moving_fps=round(len(moving) / window, 2),
                    camera_updates_per_s=round((v_end - (v_start or v_end)) / window, 2),
                    preview_size=(f"{mid[0].image.shape[1]}x{mid[0].image.shape[0]}"
                                  if mid else "-"),
                    preview_frame_ms=round(1e3 * statistics.median(
                        [f.seconds for f in moving] or [0.0]), 1),
                    full_size=f"{full.image.shape[1]}x{full.image.shape[0]}",
                    full_after_stop_s=round(full.sent_at - session.last_move, 3),
                    full_frame_s=round(full.seconds, 3),
                )
                rows.append(row)
                if on_row is not None:
                    on_row(row)
                time.sleep(0.5)
            browser.close()
    finally:
        viewer.close()
    return rows


def summarise_rows(rows: list[ViewerBenchRow]) -> dict[str, float]:
    """Medians over the drags: ``full_fps`` (1 / the full frame's render + encode + send
    time), ``moving_fps`` and ``preview_pixels_per_s`` (the preview's pixels x the moving FPS:
    what the viewer renders per second while holding its FPS target)."""
    def pixels(size: str) -> int:
        if "x" not in size:
            return 0
        w, h = size.split("x")
        return int(w) * int(h)

    return {
        "full_fps": 1.0 / max(statistics.median(r.full_frame_s for r in rows), 1e-9),
        "moving_fps": statistics.median(r.moving_fps for r in rows),
        "preview_pixels_per_s": statistics.median(pixels(r.preview_size) * r.moving_fps
                                                  for r in rows),
    }
