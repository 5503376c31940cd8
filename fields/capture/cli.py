"""`fields process images|video` and `fields bench capture`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from fields.command import OverwriteOpt, console, error, guarded, say

STAGES = {"video": "reading the video", "images": "copying images",
          "sfm": "structure from motion (features, matching, mapping)"}

CameraModelOpt = Annotated[str, typer.Option(
    "--camera-model", help="pinhole, opencv (radial-tangential distortion) or fisheye "
                           "(undistorted to pinhole images)")]
MatcherOpt = Annotated[str, typer.Option(
    "--matcher", help="auto (exhaustive up to 200 images), exhaustive or sequential")]
MaxSizeOpt = Annotated[int, typer.Option(
    "--max-size", help="longest image side after the automatic downscale (0: keep the size)")]
SfmThreadsOpt = Annotated[int, typer.Option("--threads", help="COLMAP's threads (-1: all)")]


@contextmanager
def stage_progress() -> Iterator:
    """A progress callback (stage, done, total) drawing one bar per stage."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=False) as bars:
        tasks: dict[str, int] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bars.add_task(STAGES.get(stage, stage), total=total)
            bars.update(tasks[stage], completed=done, total=total)

        yield update


def _output(output: str | None, source: str, overwrite: bool) -> Path:
    out = Path(output) if output else Path("outputs") / Path(source).stem / "scene"
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output {out}: is a file, expected a folder")
    if (out / "transforms.json").exists() and not overwrite:
        raise ValueError(f"{out} already holds a processed scene (transforms.json): replace it "
                         "with --overwrite, or choose another --output")
    return out


def _summary(report: dict, out: Path) -> None:
    say(f"{report['images_registered']} of {report['images_given']} images registered, "
        f"{report['points']} points, mean reprojection error "
        f"{report['mean_reprojection_error_px']:.3f} px, {report['seconds']['total']:.0f} s")
    say(f"wrote {out} (transforms.json, sparse/0, images/, report.json, cameras.png); "
        f"next: fields fit nerf --data {out}")


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Adds `fields process images|video` and `fields bench capture`."""
    process_app = typer.Typer(help="Turn your own capture (photos or a video) into a scene "
                                   "with cameras (structure from motion by COLMAP).",
                              no_args_is_help=True)
    app.add_typer(process_app, name="process")

    @process_app.command("images")
    def images_cmd(
        folder: Annotated[str, typer.Argument(help="a folder of photos (.jpg / .png)")],
        output: Annotated[str | None, typer.Option(
            "--output", help="the scene folder (default: outputs/<folder>/scene)")] = None,
        camera_model: CameraModelOpt = "opencv",
        matcher: MatcherOpt = "auto",
        max_size: MaxSizeOpt = 1600,
        threads: SfmThreadsOpt = -1,
        overwrite: OverwriteOpt = False,
    ) -> None:
        """Photos with no poses -> cameras by COLMAP (pycolmap) -> a scene folder that
        `fields fit nerf|neus --data` reads: transforms.json, images/ (and 2x, 4x smaller),
        sparse/0, sparse_points.ply, report.json, cameras.png."""
        from fields.capture.process import ProcessOptions, process_images

        with guarded():
            out = _output(output, folder, overwrite)
            opts = ProcessOptions(camera_model=camera_model, matcher=matcher,
                                  max_size=max_size, threads=threads)
            with stage_progress() as progress:
                report = process_images(folder, out, opts, progress)
            _summary(report, out)

    @process_app.command("video")
    def video_cmd(
        video: Annotated[str, typer.Argument(help="a video file (.mp4, .mov, ...: ffmpeg)")],
        output: Annotated[str | None, typer.Option(
            "--output", help="the scene folder (default: outputs/<video>/scene)")] = None,
        frames: Annotated[int, typer.Option(
            "--frames", help="frames to keep (the sharpest of each window)")] = 150,
        camera_model: CameraModelOpt = "opencv",
        matcher: MatcherOpt = "sequential",
        max_size: MaxSizeOpt = 1600,
        threads: SfmThreadsOpt = -1,
        overwrite: OverwriteOpt = False,
    ) -> None:
        """A video -> about --frames sharp frames -> cameras by COLMAP (sequential matching)
        -> a scene folder, as `fields process images`."""
        from fields.capture.process import ProcessOptions, process_video

        with guarded():
            out = _output(output, video, overwrite)
            opts = ProcessOptions(camera_model=camera_model, matcher=matcher,
                                  max_size=max_size, threads=threads)
            with stage_progress() as progress:
                report = process_video(video, out, frames, opts, progress)
            _summary(report, out)

    @bench_app.command("capture")
    def bench_capture_cmd(
        photos: Annotated[int, typer.Option("--photos", help="photos to render (0: none)")] = 60,
        frames: Annotated[int, typer.Option(
            "--frames", help="video frames to render (0: no video)")] = 240,
        keep: Annotated[int, typer.Option(
            "--keep", help="video frames kept by fields process video")] = 80,
        out: Annotated[str, typer.Option("--out", help="working folder")] =
            "outputs/bench/capture",
        threads: Annotated[int, typer.Option("--threads", help="threads (-1: all)")] = -1,
        seed: Annotated[int, typer.Option("--seed", help="seed of the capture")] = 0,
        as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] =
            False,
    ) -> None:
        """Pose recovery on captures we render ourselves (the textured tabletop: JPEG photos at
        varied exposure with hand-held jitter, and an .mp4 orbit): processed with no poses,
        aligned to the true cameras (Umeyama): registered fraction, rotation and camera-centre
        errors (in % of the orbit radius)."""
        from fields.capture.bench import bench_capture

        with guarded():
            if photos == 0 and frames == 0:
                raise error("--photos 0 and --frames 0: nothing to measure")
            with stage_progress() as progress:
                rows = bench_capture(Path(out), photos, frames, keep, threads, seed, progress)
            for r in rows:
                if as_json:
                    print(json.dumps(r))
                else:
                    say(f"{r['capture']}: {r['registered']}/{r['given']} registered, rotation "
                        f"{r['rotation_mean_deg']:.3f} deg mean ({r['rotation_max_deg']:.3f} "
                        f"max), centre {r['centre_mean_pct_radius']:.3f}% of the radius mean "
                        f"({r['centre_max_pct_radius']:.3f}% max), {r['seconds']:.0f} s")
