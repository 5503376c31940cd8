"""`fields fit image|audio|volume|video` and `fields bench inr`: implicit neural representations.

Registered on the main command line by `fields.cli` (`register`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import torch
import typer
from rich.console import Console

ModelOpt = Annotated[
    str, typer.Option(help="INR model (fields.inr.MODELS): hash, siren, finer, gauss, relu_pe, "
                           "rff, wire, wavelet_split, fan, sl2a")
]
SecondsOpt = Annotated[float, typer.Option(help="training time budget in seconds")]
StepsOpt = Annotated[int, typer.Option(help="step budget")]
BatchOpt = Annotated[int, typer.Option(help="samples per step (0: the model's default; "
                                            "-1: all of them)")]
LrOpt = Annotated[float, typer.Option(help="learning rate (0: the model's default)")]
TeachOpt = Annotated[float, typer.Option(help="nonparametric teaching: train on this fraction "
                                              "of samples with the largest error (0: off)")]
OutOpt = Annotated[str | None, typer.Option(help="output folder")]
ThreadsOpt = Annotated[int, typer.Option(help="torch threads (0: leave as is)")]


def _batch(batch: int) -> int | str | None:
    return "default" if batch == 0 else (None if batch < 0 else batch)


def register(fit_app: typer.Typer, bench_app: typer.Typer, console: Console,
             error: Callable[[Exception], typer.Exit]) -> None:
    """Adds the INR commands to the `fit` and `bench` groups."""

    def train(coords: torch.Tensor, values: torch.Tensor, model: str, finest: int,
              seconds: float, max_steps: int, batch: int, lr: float, **extra: Any) -> Any:
        """`fit_signal` with a progress bar; a bad setting exits with a clear message."""
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        from fields.inr import fit_signal

        with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                      TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                      console=console) as progress:
            task = progress.add_task("training", total=seconds, status="")

            def on_eval(rec: dict[str, float]) -> None:
                progress.update(task, completed=min(rec["seconds"], seconds),
                                status=f"step {int(rec['step'])}  PSNR {rec['psnr']:.2f} dB")

            try:
                return fit_signal(coords, values, model, finest=finest, seconds=seconds,
                                  max_steps=max_steps, batch=_batch(batch), lr=lr or None,
                                  on_eval=on_eval, **extra)
            except ValueError as e:
                raise error(e) from e

    @fit_app.command("image")
    def fit_image_cmd(
        image: Annotated[str | None, typer.Argument(
            help="image file (png/jpg/exr/...; default: the built-in procedural image)")] = None,
        builtin: Annotated[str | None, typer.Option(
            help="a photograph bundled with scikit-image: camera, astronaut, coffee, ...")] = None,
        model: ModelOpt = "hash",
        size: Annotated[int, typer.Option(
            help="built-in images: longer side in pixels")] = 256,
        seconds: SecondsOpt = 60.0,
        max_steps: StepsOpt = 1_000_000,
        batch: BatchOpt = 0,
        lr: LrOpt = 0.0,
        teaching: TeachOpt = 0.0,
        sape: Annotated[int, typer.Option(
            help="SAPE progressive masking with this many cells per axis (0: off; models "
                 "with a level encoding: relu_pe, hash)")] = 0,
        noise: Annotated[float, typer.Option(
            help="denoising: add Gaussian noise of this std to the image, fit it, report PSNR "
                 "against the clean one")] = 0.0,
        keep: Annotated[float, typer.Option(
            help="inpainting: fit on this random fraction of the pixels (1: all)")] = 1.0,
        downsample: Annotated[int, typer.Option(
            help="super-resolution: fit the image downsampled by this factor, render it at "
                 "full size")] = 1,
        encoding: Annotated[str | None, typer.Option(
            help="custom encoding config (JSON) instead of --model")] = None,
        network: Annotated[str | None, typer.Option(
            help="custom network config (JSON) instead of --model")] = None,
        out: OutOpt = None,
        seed: Annotated[int, typer.Option(help="initialisation and sampling seed")] = 1337,
        threads: ThreadsOpt = 0,
    ) -> None:
        """Fit an implicit neural representation to an image; writes target.png,
        reconstruction.png, error.png, metrics.json (psnr, ssim, steps, seconds, params) and
        checkpoint.pt (`fields render` renders it at any resolution)."""
        from fields.data.images import error_map, procedural_image, read_image, write_image
        from fields.data.signals import builtin_image, resize_image
        from fields.inr import render_signal, save_inr_checkpoint, ssim
        from fields.io import write_text_atomic
        from fields.nn.inr_layers import count_parameters

        if threads > 0:
            torch.set_num_threads(threads)
        try:
            if image is not None and builtin is not None:
                raise ValueError("give an image file or --builtin, not both")
            if not 0.0 < keep <= 1.0 or noise < 0 or downsample < 1:
                raise ValueError("--keep must be in (0, 1], --noise >= 0, --downsample >= 1")
            if image is not None:
                clean, name = read_image(image), Path(image).stem
            elif builtin is not None:
                clean, name = builtin_image(builtin, size), builtin
            else:
                clean, name = procedural_image(512), "procedural"
            custom = None
            if encoding or network:
                custom = {"encoding": json.loads(encoding) if encoding else None,
                          "network": json.loads(network) if network else None}
        except (ValueError, FileNotFoundError) as e:
            raise error(e) from e
        height, width, channels = clean.shape
        observed = clean
        if downsample > 1:
            observed = resize_image(clean, max(1, height // downsample),
                                    max(1, width // downsample))
        gen = torch.Generator().manual_seed(seed)
        if noise > 0:
            observed = (observed + noise * torch.randn(observed.shape, generator=gen)).clamp(0, 1)
        oh, ow = observed.shape[:2]
        from fields.data.signals import grid_coords

        coords = grid_coords((oh, ow))
        values = observed.reshape(-1, channels)
        mask = None
        if keep < 1.0:
            mask = torch.rand(oh * ow, generator=gen) < keep
        label = model if custom is None else "custom"
        out_dir = Path(out or f"outputs/{name}/inr/{label}")
        console.print(f"fitting {name} ({width}x{height}x{channels}) with {label}, "
                      f"{seconds:g} s budget")
        fit = train(coords, values, model, max(oh, ow), seconds, max_steps, batch, lr,
                    custom=custom, mask=mask, teaching=teaching, sape=sape or None, seed=seed)
        recon = render_signal(fit.field, (oh, ow), width / ow).clamp(0, 1)
        if recon.shape != clean.shape:  # rounding of the super-resolution grid
            recon = resize_image(recon, height, width)
        from fields.data.images import psnr

        metrics: dict[str, Any] = {
            "source": image or builtin or "procedural", "model": label, "height": height,
            "width": width, "channels": channels, "psnr": psnr(recon, clean),
            "ssim": ssim(recon, clean), "steps": fit.steps, "seconds": fit.seconds,
            "params": count_parameters(fit.field), "threads": torch.get_num_threads(),
        }
        if noise > 0:
            metrics.update(noise=noise, psnr_noisy_input=psnr(observed, clean))
        if mask is not None:
            missing = ~mask.reshape(oh, ow)
            metrics.update(keep=keep, psnr_missing_pixels=psnr(recon[missing], clean[missing])
                           if recon.shape[:2] == (oh, ow) and missing.any() else None)
        if downsample > 1:
            bicubic = resize_image(observed, height, width)
            metrics.update(downsample=downsample, psnr_bicubic=psnr(bicubic, clean))
        metrics["history"] = fit.history
        write_image(out_dir / "target.png", clean)
        write_image(out_dir / "reconstruction.png", recon)
        write_image(out_dir / "error.png", error_map(recon, clean))
        write_text_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        save_inr_checkpoint(out_dir / "checkpoint.pt", fit.field,
                            {"kind": "image", "shape": [oh, ow], "channels": channels,
                             "source": metrics["source"]})
        console.print(f"PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.4f} after "
                      f"{fit.steps} steps, {fit.seconds:.1f} s ({metrics['params']} parameters)."
                      f" Wrote {out_dir}/reconstruction.png, error.png, metrics.json, "
                      "checkpoint.pt")

    @fit_app.command("audio")
    def fit_audio_cmd(
        audio: Annotated[str | None, typer.Argument(
            help="WAV file (default: a built-in 1 s test signal)")] = None,
        model: ModelOpt = "siren",
        seconds: SecondsOpt = 60.0,
        max_steps: StepsOpt = 1_000_000,
        batch: BatchOpt = 0,
        lr: LrOpt = 0.0,
        out: OutOpt = None,
        threads: ThreadsOpt = 0,
    ) -> None:
        """Fit an INR to audio (time -> amplitude); writes reconstruction.wav, waveform.png,
        metrics.json (psnr on amplitudes mapped to [0, 1], snr_db) and checkpoint.pt."""
        from fields.data.signals import read_audio, synthetic_audio, write_audio
        from fields.inr import render_signal, save_inr_checkpoint
        from fields.io import write_text_atomic
        from fields.nn.inr_layers import count_parameters
        from fields.plots import write_waveform_figure

        if threads > 0:
            torch.set_num_threads(threads)
        try:
            if audio is None:
                samples, rate, name = synthetic_audio(), 16000, "synthetic-audio"
            else:
                (samples, rate), name = read_audio(audio), Path(audio).stem
        except (ValueError, FileNotFoundError) as e:
            raise error(e) from e
        n, channels = samples.shape
        from fields.data.signals import grid_coords

        coords = grid_coords((n,))
        values = (samples + 1.0) / 2.0  # amplitudes in [0, 1]: PSNR as for images
        out_dir = Path(out or f"outputs/{name}/inr/{model}")
        console.print(f"fitting {name} ({n} samples at {rate} Hz, {channels} channel(s)) "
                      f"with {model}, {seconds:g} s budget")
        fit = train(coords, values, model, n, seconds, max_steps, batch, lr)
        recon = render_signal(fit.field, (n,)).clamp(0, 1) * 2.0 - 1.0
        noise_power = (recon - samples).square().mean().item()
        snr = 10 * math.log10(samples.square().mean().item() / max(noise_power, 1e-20))
        metrics = {"source": audio or "synthetic", "model": model, "samples": n,
                   "rate": rate, "channels": channels, "psnr": fit.psnr, "snr_db": snr,
                   "steps": fit.steps, "seconds": fit.seconds,
                   "params": count_parameters(fit.field), "history": fit.history}
        write_audio(out_dir / "reconstruction.wav", recon, rate)
        write_waveform_figure(out_dir / "waveform.png", samples, recon, rate)
        write_text_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        save_inr_checkpoint(out_dir / "checkpoint.pt", fit.field,
                            {"kind": "audio", "shape": [n], "channels": channels,
                             "rate": rate})
        console.print(f"PSNR {fit.psnr:.2f} dB, SNR {snr:.2f} dB after {fit.steps} steps, "
                      f"{fit.seconds:.1f} s. Wrote {out_dir}/reconstruction.wav, waveform.png, "
                      "metrics.json, checkpoint.pt")

    @fit_app.command("volume")
    def fit_volume_cmd(
        volume: Annotated[str | None, typer.Argument(
            help=".npy volume (D, H, W) or (D, H, W, C) (default: a built-in test volume)")
        ] = None,
        model: ModelOpt = "hash",
        seconds: SecondsOpt = 60.0,
        max_steps: StepsOpt = 1_000_000,
        batch: BatchOpt = 0,
        lr: LrOpt = 0.0,
        out: OutOpt = None,
        threads: ThreadsOpt = 0,
    ) -> None:
        """Fit an INR to a 3-D volume; writes reconstruction.npy (in the input's value range),
        slices.png (middle slices, reconstruction and error), metrics.json and
        checkpoint.pt."""
        from fields.data.signals import grid_coords, read_volume, synthetic_volume
        from fields.inr import render_signal, save_inr_checkpoint
        from fields.io import save_npy_atomic, write_text_atomic
        from fields.nn.inr_layers import count_parameters
        from fields.plots import write_slices_figure

        if threads > 0:
            torch.set_num_threads(threads)
        try:
            if volume is None:
                vol, (lo, hi), name = synthetic_volume(), (0.0, 1.0), "synthetic-volume"
            else:
                (vol, (lo, hi)), name = read_volume(volume), Path(volume).stem
        except (ValueError, FileNotFoundError) as e:
            raise error(e) from e
        shape, channels = tuple(vol.shape[:3]), vol.shape[3]
        coords, values = grid_coords(shape), vol.reshape(-1, channels)
        out_dir = Path(out or f"outputs/{name}/inr/{model}")
        console.print(f"fitting {name} ({'x'.join(map(str, shape))}, {channels} channel(s)) "
                      f"with {model}, {seconds:g} s budget")
        fit = train(coords, values, model, max(shape), seconds, max_steps, batch, lr)
        recon = render_signal(fit.field, shape).clamp(0, 1)
        metrics = {"source": volume or "synthetic", "model": model, "shape": list(shape),
                   "channels": channels, "psnr": fit.psnr, "steps": fit.steps,
                   "seconds": fit.seconds, "params": count_parameters(fit.field),
                   "history": fit.history}
        save_npy_atomic(out_dir / "reconstruction.npy",
                        (recon * (hi - lo) + lo).numpy().astype("float32"))
        write_slices_figure(out_dir / "slices.png", vol, recon)
        write_text_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        save_inr_checkpoint(out_dir / "checkpoint.pt", fit.field,
                            {"kind": "volume", "shape": list(shape), "channels": channels,
                             "range": [lo, hi]})
        console.print(f"PSNR {fit.psnr:.2f} dB after {fit.steps} steps, {fit.seconds:.1f} s. "
                      f"Wrote {out_dir}/reconstruction.npy, slices.png, metrics.json, "
                      "checkpoint.pt")

    @fit_app.command("video")
    def fit_video_cmd(
        video: Annotated[str, typer.Argument(help="a folder of frames or a video file")],
        model: ModelOpt = "hash",
        max_frames: Annotated[int, typer.Option(help="use at most this many frames")] = 64,
        seconds: SecondsOpt = 120.0,
        max_steps: StepsOpt = 1_000_000,
        batch: BatchOpt = 0,
        lr: LrOpt = 0.0,
        out: OutOpt = None,
        threads: ThreadsOpt = 0,
    ) -> None:
        """Fit an INR to a video ((x, y, t) -> colour); writes frames of the reconstruction
        (first, middle, last) with error maps, metrics.json and checkpoint.pt."""
        from fields.data.images import error_map, psnr, write_image
        from fields.data.signals import grid_coords, read_video
        from fields.inr import render_signal, save_inr_checkpoint
        from fields.io import write_text_atomic
        from fields.nn.inr_layers import count_parameters

        if threads > 0:
            torch.set_num_threads(threads)
        try:
            frames = read_video(video, max_frames)
        except (ValueError, FileNotFoundError) as e:
            raise error(e) from e
        t, h, w, c = frames.shape
        coords, values = grid_coords((t, h, w)), frames.reshape(-1, c)
        out_dir = Path(out or f"outputs/{Path(video).stem}/inr/{model}")
        console.print(f"fitting {video} ({t} frames of {w}x{h}) with {model}, "
                      f"{seconds:g} s budget")
        fit = train(coords, values, model, max(t, h, w), seconds, max_steps, batch, lr)
        recon = render_signal(fit.field, (t, h, w)).clamp(0, 1)
        for k in sorted({0, t // 2, t - 1}):
            write_image(out_dir / f"frame_{k:03d}.png", recon[k])
            write_image(out_dir / f"error_{k:03d}.png", error_map(recon[k], frames[k]))
        metrics = {"source": video, "model": model, "frames": t, "height": h, "width": w,
                   "psnr": psnr(recon, frames), "steps": fit.steps, "seconds": fit.seconds,
                   "params": count_parameters(fit.field), "history": fit.history}
        write_text_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        save_inr_checkpoint(out_dir / "checkpoint.pt", fit.field,
                            {"kind": "video", "shape": [t, h, w], "channels": c})
        console.print(f"PSNR {metrics['psnr']:.2f} dB after {fit.steps} steps, "
                      f"{fit.seconds:.1f} s. Wrote {out_dir}")

    @bench_app.command("inr")
    def bench_inr_cmd(
        image: Annotated[str | None, typer.Argument(
            help="image file (default: --builtin)")] = None,
        builtin: Annotated[str, typer.Option(help="built-in photograph")] = "camera",
        size: Annotated[int, typer.Option(help="built-in image: longer side")] = 256,
        seconds: Annotated[float, typer.Option(help="training seconds per model")] = 60.0,
        models: Annotated[list[str] | None, typer.Option(
            "--model", help="models to run (repeatable; default: all)")] = None,
        out: Annotated[str, typer.Option(help="folder for the figure and table")] =
            "outputs/bench-inr",
        threads: ThreadsOpt = 0,
        as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] =
            False,
    ) -> None:
        """Every INR model on one image with the same training time: PSNR, SSIM, steps,
        parameters, one table, and a PSNR-versus-time figure (psnr_vs_time.png) in OUT."""
        from fields.bench import INRBenchRow, bench_inr
        from fields.data.images import read_image
        from fields.data.signals import builtin_image
        from fields.inr import MODELS
        from fields.io import write_text_atomic
        from fields.plots import write_psnr_time_figure

        if threads > 0:
            torch.set_num_threads(threads)
        chosen = list(models or MODELS)
        bad = [m for m in chosen if m not in MODELS]
        if bad:
            raise error(ValueError(f"unknown model(s) {bad}; expected some of {list(MODELS)}"))
        try:
            img = read_image(image) if image else builtin_image(builtin, size)
        except (ValueError, FileNotFoundError) as e:
            raise error(e) from e
        from rich.table import Table

        table = Table(title=f"fields bench inr ({image or builtin}, {img.shape[1]}x"
                            f"{img.shape[0]}, {seconds:g} s each, {torch.get_num_threads()} "
                            "threads)")
        for col in ("model", "PSNR (dB)", "SSIM", "steps", "seconds", "params", "description"):
            table.add_column(col, justify="right" if col != "description" else "left")
        rows: list[INRBenchRow] = []

        def on_row(row: INRBenchRow) -> None:
            rows.append(row)
            if as_json:
                print(json.dumps(row.as_dict(history=False)), flush=True)
            else:
                console.print(f"{row.model}: PSNR {row.psnr:.2f} dB, SSIM {row.ssim:.4f}, "
                              f"{row.steps} steps, {row.params} parameters")
            table.add_row(row.model, f"{row.psnr:.2f}", f"{row.ssim:.4f}", str(row.steps),
                          f"{row.seconds:.1f}", str(row.params), row.description)

        bench_inr(img, chosen, seconds, on_row=on_row)
        out_dir = Path(out)
        write_psnr_time_figure(out_dir / "psnr_vs_time.png",
                               {r.model: r.history for r in rows},
                               f"{image or builtin} ({img.shape[1]}x{img.shape[0]})")
        write_text_atomic(out_dir / "bench.json",
                          json.dumps([r.as_dict() for r in rows], indent=2) + "\n")
        if not as_json:
            console.print(table)
        console.print(f"wrote {out_dir}/psnr_vs_time.png and bench.json")
