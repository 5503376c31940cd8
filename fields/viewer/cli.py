"""`fields view`: the web viewer for any checkpoint (registered by `fields.cli`)."""

from __future__ import annotations

from typing import Annotated

import torch
import typer
from rich.markup import escape

from fields.command import console, error


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Adds `fields view` and `fields bench viewer`."""
    @app.command("view")
    def view_cmd(
        checkpoint: Annotated[str, typer.Argument(
            help="checkpoint.pt of any kind (NeRF, SDF / NeuS, INR, scene flow, PDE "
                 "solution), or a mesh file (ply / obj / stl / glb)")],
        host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="port (0: any free port)")] = 7007,
        max_resolution: Annotated[
            int, typer.Option(help="longer side of the full frame, pixels")] = 512,
        fps: Annotated[float, typer.Option(help="frames per second to aim at while the "
                                                "camera moves")] = 12.0,
        threads: Annotated[int, typer.Option(help="torch threads (0: leave as is)")] = 0,
    ) -> None:
        """Show a checkpoint in the browser (http://127.0.0.1:7007): orbit, pan and zoom; the
        picture refines when the camera stops. A checkpoint that fails to load is reported in
        the page, where another can be loaded. Ctrl-C stops the server."""
        from fields.viewer import Viewer, load_view

        if threads > 0:
            torch.set_num_threads(threads)
        if not 16 <= max_resolution <= 4096 or not 1 <= fps <= 60:
            raise error(ValueError("--max-resolution must be in [16, 4096] and --fps in "
                                   "[1, 60]"))
        view, problem = None, None
        try:
            view = load_view(checkpoint)
        except Exception as e:  # shown in the page; the server still starts
            problem = str(e) or type(e).__name__
            console.print(f"[red]error:[/red] {escape(problem)}", highlight=False,
                          soft_wrap=True)
        try:
            viewer = Viewer(view, host=host, port=port, max_resolution=max_resolution,
                            target_fps=fps, error=problem, source=checkpoint)
        except (OSError, ValueError) as e:  # an address that cannot be bound
            raise error(e) from e
        try:
            console.print(f"viewer at [bold]{viewer.url}[/bold] (Ctrl-C to stop)",
                          highlight=False)
            viewer.wait()
        except KeyboardInterrupt:
            pass
        finally:
            viewer.close()
        console.print("viewer stopped")

    @bench_app.command("viewer")
    def bench_viewer_cmd(
        checkpoint: Annotated[str, typer.Argument(help="checkpoint.pt to view (a NeRF of the "
                                                       "default scene for the issue's figure)")],
        seconds: Annotated[float, typer.Option(help="seconds of each drag")] = 5.0,
        drags: Annotated[int, typer.Option(help="how many drags")] = 3,
        width: Annotated[int, typer.Option(help="browser viewport width")] = 1280,
        height: Annotated[int, typer.Option(help="browser viewport height")] = 720,
        max_resolution: Annotated[int, typer.Option(help="the viewer's full-frame size")] = 512,
        fps: Annotated[float, typer.Option(help="the viewer's moving FPS target")] = 12.0,
        chromium: Annotated[str, typer.Option(help="chromium executable")] = "/usr/bin/chromium",
        threads: Annotated[int, typer.Option(help="torch threads (0: leave as is)")] = 0,
        as_json: Annotated[bool, typer.Option("--json", help="one JSON line per drag")] = False,
        against: Annotated[str | None, typer.Option(
            help="a second checkpoint measured the same way right after (e.g. the hash-grid "
                 "model a kilo model was distilled from): the two side by side, with the "
                 "ratios of their full-frame rates and preview pixel rates")] = None,
    ) -> None:
        """Frames per second while the camera moves and seconds to the full frame after it
        stops, end to end: the viewer and headless chromium (Playwright drags the mouse).
        While moving, the viewer sizes its previews to hold the FPS target, so the preview's
        pixels per second, not the FPS, is what a faster field raises."""
        import json
        import os

        from rich.table import Table

        from fields.viewer.bench import bench_viewer

        if threads > 0:
            torch.set_num_threads(threads)
        if not os.path.exists(chromium):
            raise error(FileNotFoundError(f"{chromium}: no chromium (make setup installs "
                                          "Debian's chromium where apt is available)"))
        from fields.viewer.bench import summarise_rows

        summaries = {}
        for path in [checkpoint] + ([against] if against else []):
            try:
                rows = bench_viewer(
                    path, seconds=seconds, drags=drags, viewport=(width, height),
                    max_resolution=max_resolution, target_fps=fps, chromium=chromium,
                    on_row=(lambda r, p=path: print(json.dumps({"checkpoint": p,
                                                                 **r.as_dict()}), flush=True))
                    if as_json else None)
            except (ValueError, OSError, RuntimeError) as e:
                raise error(e) from e
            summaries[path] = summarise_rows(rows)
            if as_json:
                continue
            table = Table(title=f"viewer, {path} ({width}x{height} page, "
                                f"{torch.get_num_threads()} threads)")
            for col in ("drag", "moving FPS", "camera msgs/s", "preview", "preview ms", "full",
                        "full after stop s", "full frame s"):
                table.add_column(col, justify="right")
            for r in rows:
                table.add_row(str(r.drag), f"{r.moving_fps:.1f}",
                              f"{r.camera_updates_per_s:.1f}", r.preview_size,
                              f"{r.preview_frame_ms:.0f}", r.full_size,
                              f"{r.full_after_stop_s:.2f}", f"{r.full_frame_s:.2f}")
            console.print(table)
        if against:
            a, b = summaries[checkpoint], summaries[against]
            line = {"checkpoint": checkpoint, "against": against, **{
                f"{k}_ratio": round(a[k] / max(b[k], 1e-12), 3)
                for k in ("full_fps", "preview_pixels_per_s")}, "medians": summaries}
            if as_json:
                print(json.dumps(line), flush=True)
            else:
                console.print(
                    f"{checkpoint} against {against} (medians over the drags): full frames "
                    f"{a['full_fps']:.2f} vs {b['full_fps']:.2f} per s "
                    f"({line['full_fps_ratio']:.2f}x); preview pixels "
                    f"{a['preview_pixels_per_s'] / 1e3:.0f}k vs "
                    f"{b['preview_pixels_per_s'] / 1e3:.0f}k per s "
                    f"({line['preview_pixels_per_s_ratio']:.2f}x)", highlight=False)
