"""`fields fit image|audio|volume|video` and `fields bench inr`; `fields render` and `fields
eval` of INR checkpoints (`render_inr`, `evaluate_inr`).

Every fit command takes the grammar of `fields.command` (``--output --max-seconds --steps
--seed --config --resume --threads``; ``--config`` overrides `fields.inr.INRConfig`, and the
flags ``--model --batch --lr --teaching --sape --encoding --network`` are shorthands for its
fields, winning over ``--config``). The commands parse, call the work of `fields.inr.run` and
print. Registered on the command line by `fields.inr.kind` (`register`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import torch
import typer

from fields import distributed
from fields.command import (
    DEFAULT_CHECKPOINT_EVERY,
    DEFAULT_SEED,
    IMAGE_SUFFIXES,
    CheckpointEveryOpt,
    ConfigOpt,
    DeviceOpt,
    JobsOpt,
    MaxSecondsOpt,
    OutputOpt,
    OverwriteOpt,
    RayOpt,
    ResumeOpt,
    RunOptions,
    SeedOpt,
    StepsOpt,
    ThreadsOpt,
    alias,
    check_device,
    console,
    device_name,
    error,
    fit_many,
    guarded,
    hidden,
    parse_config,
    run_notes,
    say,
    set_threads,
    write_metrics,
    write_run_config,
)

ModelOpt = Annotated[str | None, typer.Option(
    help="INR model (fields.inr.MODELS): hash, siren, finer, gauss, relu_pe, rff, wire, "
         "wavelet_split, fan, sl2a (default: hash; audio: siren)")]
BatchOpt = Annotated[int | None, typer.Option(
    help="samples per step (default 0: the model's; -1: all of them)")]
LrOpt = Annotated[float | None, typer.Option(
    help="learning rate (default 0: the model's)")]
TeachOpt = Annotated[float | None, typer.Option(
    help="nonparametric teaching: train on this fraction of samples with the largest error "
         "(default 0: off)")]
SapeOpt = Annotated[int | None, typer.Option(
    help="SAPE progressive masking with this many cells per axis (default 0: off; models "
         "with a level encoding: relu_pe, hash)")]
EncodingOpt = Annotated[str | None, typer.Option(
    help="custom encoding config (JSON, tiny-cuda-nn style) instead of --model")]
NetworkOpt = Annotated[str | None, typer.Option(
    help="custom network config (JSON, tiny-cuda-nn style) instead of --model")]
EvalEveryOpt = Annotated[float, typer.Option(
    help="seconds of training between evaluations (the PSNR history)")]
OldOutOpt = Annotated[str | None, hidden("--out")]
OldSecondsOpt = Annotated[float | None, hidden("--seconds")]
OldMaxStepsOpt = Annotated[int | None, hidden("--max-steps")]


def register(app: typer.Typer, fit_app: typer.Typer, bench_app: typer.Typer) -> None:
    """Adds `fields fit image|audio|volume|video` and `fields bench inr`."""
    fit_app.command("image")(fit_image_cmd)
    fit_app.command("audio")(fit_audio_cmd)
    fit_app.command("volume")(fit_volume_cmd)
    fit_app.command("video")(fit_video_cmd)
    bench_app.command("inr")(bench_inr_cmd)


def fit_image_cmd(
    ctx: typer.Context,
    image: Annotated[str | None, typer.Argument(
        help="image file (png/jpg/exr/...; default: the built-in procedural image)")] = None,
    output: OutputOpt = None,
    max_seconds: MaxSecondsOpt = 60.0,
    steps: StepsOpt = 1_000_000,
    seed: SeedOpt = DEFAULT_SEED,
    config: ConfigOpt = None,
    resume: ResumeOpt = None,
    threads: ThreadsOpt = 0,
    overwrite: OverwriteOpt = False,
    checkpoint_every: CheckpointEveryOpt = DEFAULT_CHECKPOINT_EVERY,
    model: ModelOpt = None,
    batch: BatchOpt = None,
    lr: LrOpt = None,
    teaching: TeachOpt = None,
    sape: SapeOpt = None,
    encoding: EncodingOpt = None,
    network: NetworkOpt = None,
    builtin: Annotated[str | None, typer.Option(
        help="a photograph bundled with scikit-image: camera, astronaut, coffee, ...")] = None,
    size: Annotated[int, typer.Option(help="built-in photographs: longer side in pixels")] = 256,
    noise: Annotated[float, typer.Option(
        help="denoising: add Gaussian noise of this std to the image, fit it, report PSNR "
             "against the clean one")] = 0.0,
    keep: Annotated[float, typer.Option(
        help="inpainting: fit on this random fraction of the pixels (1: all)")] = 1.0,
    downsample: Annotated[int, typer.Option(
        help="super-resolution: fit the image downsampled by this factor, render it at "
             "full size")] = 1,
    device: DeviceOpt = "cpu",
    eval_every: EvalEveryOpt = 2.0,
    out: OldOutOpt = None,
    seconds: OldSecondsOpt = None,
    max_steps: OldMaxStepsOpt = None,
    images: Annotated[str | None, typer.Option(
        help="a folder of images: fit each as its own job (a batch: manifest.jsonl, "
             "resumable)")] = None,
    jobs: JobsOpt = 0,
    ray: RayOpt = None,
) -> None:
    """Fit an implicit neural representation to an image; writes config.json, target.png,
    reconstruction.png, error.png, metrics.json (psnr, ssim, steps, seconds, params) and
    checkpoint.pt (`fields render` renders it at any resolution, `fields eval` measures it).
    With --images DIR, every image of DIR is fitted as its own job into --output/<image
    name>/ (local pool, or Ray)."""
    if images is not None:
        if image or builtin or resume:
            raise error("--images fits a folder: not with an image, --builtin or --resume (a "
                        "rerun of the batch skips the items already done)")
        with guarded():
            from fields.batch import items_in

            files = items_in(images, IMAGE_SUFFIXES, "images")
            fit_many(ctx, ["fit", "image"], None, files, output or out, Path(images).name, jobs,
                     ray, ["psnr", "ssim", "steps"], ["images", "out"])
        return
    if jobs or ray is not None:
        raise error("--jobs and --ray go with --images (a folder of images)")
    opts = _options(output, out, max_seconds, seconds, steps, max_steps, seed, config, resume,
                    threads, overwrite, checkpoint_every)
    _fit("image", dict(file=image, builtin=builtin, size=size), opts,
         _shorthands(model, batch, lr, teaching, sape, encoding, network), eval_every,
         noise=noise, keep=keep, downsample=downsample, device=device)


def fit_audio_cmd(
    audio: Annotated[str | None, typer.Argument(
        help="WAV file (default: a built-in 1 s test signal)")] = None,
    output: OutputOpt = None,
    max_seconds: MaxSecondsOpt = 60.0,
    steps: StepsOpt = 1_000_000,
    seed: SeedOpt = DEFAULT_SEED,
    config: ConfigOpt = None,
    resume: ResumeOpt = None,
    threads: ThreadsOpt = 0,
    overwrite: OverwriteOpt = False,
    checkpoint_every: CheckpointEveryOpt = DEFAULT_CHECKPOINT_EVERY,
    model: ModelOpt = None,
    batch: BatchOpt = None,
    lr: LrOpt = None,
    teaching: TeachOpt = None,
    sape: SapeOpt = None,
    encoding: EncodingOpt = None,
    network: NetworkOpt = None,
    device: DeviceOpt = "cpu",
    eval_every: EvalEveryOpt = 2.0,
    out: OldOutOpt = None,
    seconds: OldSecondsOpt = None,
    max_steps: OldMaxStepsOpt = None,
) -> None:
    """Fit an INR to audio (time -> amplitude); writes config.json, reconstruction.wav,
    waveform.png, metrics.json (psnr on amplitudes mapped to [0, 1], snr_db) and
    checkpoint.pt."""
    opts = _options(output, out, max_seconds, seconds, steps, max_steps, seed, config, resume,
                    threads, overwrite, checkpoint_every)
    _fit("audio", dict(file=audio), opts,
         _shorthands(model, batch, lr, teaching, sape, encoding, network), eval_every,
         device=device)


def fit_volume_cmd(
    volume: Annotated[str | None, typer.Argument(
        help=".npy volume (D, H, W) or (D, H, W, C) (default: a built-in test volume)")] = None,
    output: OutputOpt = None,
    max_seconds: MaxSecondsOpt = 60.0,
    steps: StepsOpt = 1_000_000,
    seed: SeedOpt = DEFAULT_SEED,
    config: ConfigOpt = None,
    resume: ResumeOpt = None,
    threads: ThreadsOpt = 0,
    overwrite: OverwriteOpt = False,
    checkpoint_every: CheckpointEveryOpt = DEFAULT_CHECKPOINT_EVERY,
    model: ModelOpt = None,
    batch: BatchOpt = None,
    lr: LrOpt = None,
    teaching: TeachOpt = None,
    sape: SapeOpt = None,
    encoding: EncodingOpt = None,
    network: NetworkOpt = None,
    device: DeviceOpt = "cpu",
    eval_every: EvalEveryOpt = 2.0,
    out: OldOutOpt = None,
    seconds: OldSecondsOpt = None,
    max_steps: OldMaxStepsOpt = None,
) -> None:
    """Fit an INR to a 3-D volume; writes config.json, reconstruction.npy (in the input's
    value range), slices.png (middle slices, reconstruction and error), metrics.json and
    checkpoint.pt."""
    opts = _options(output, out, max_seconds, seconds, steps, max_steps, seed, config, resume,
                    threads, overwrite, checkpoint_every)
    _fit("volume", dict(file=volume), opts,
         _shorthands(model, batch, lr, teaching, sape, encoding, network), eval_every,
         device=device)


def fit_video_cmd(
    video: Annotated[str, typer.Argument(help="a folder of frames or a video file")],
    output: OutputOpt = None,
    max_seconds: MaxSecondsOpt = 120.0,
    steps: StepsOpt = 1_000_000,
    seed: SeedOpt = DEFAULT_SEED,
    config: ConfigOpt = None,
    resume: ResumeOpt = None,
    threads: ThreadsOpt = 0,
    overwrite: OverwriteOpt = False,
    checkpoint_every: CheckpointEveryOpt = DEFAULT_CHECKPOINT_EVERY,
    model: ModelOpt = None,
    batch: BatchOpt = None,
    lr: LrOpt = None,
    teaching: TeachOpt = None,
    sape: SapeOpt = None,
    encoding: EncodingOpt = None,
    network: NetworkOpt = None,
    max_frames: Annotated[int, typer.Option(help="use at most this many frames")] = 64,
    device: DeviceOpt = "cpu",
    eval_every: EvalEveryOpt = 2.0,
    out: OldOutOpt = None,
    seconds: OldSecondsOpt = None,
    max_steps: OldMaxStepsOpt = None,
) -> None:
    """Fit an INR to a video ((x, y, t) -> colour); writes config.json, frames of the
    reconstruction (first, middle, last) with error maps, metrics.json and checkpoint.pt."""
    opts = _options(output, out, max_seconds, seconds, steps, max_steps, seed, config, resume,
                    threads, overwrite, checkpoint_every)
    _fit("video", dict(file=video, max_frames=max_frames), opts,
         _shorthands(model, batch, lr, teaching, sape, encoding, network), eval_every,
         device=device)


# -- the steps every fit command shares --


def _options(output: str | None, out: str | None, max_seconds: float, seconds: float | None,
             steps: int, max_steps: int | None, seed: int, config: str | None,
             resume: str | None, threads: int, overwrite: bool = False,
             checkpoint_every: float = DEFAULT_CHECKPOINT_EVERY) -> RunOptions:
    """The shared options, with the old spellings (--out, --seconds, --max-steps) folded in."""
    return RunOptions(
        output=alias(output, out, "--out", "--output"),
        max_seconds=alias(max_seconds, seconds, "--seconds", "--max-seconds"),
        steps=alias(steps, max_steps, "--max-steps", "--steps"),
        seed=seed, config=config, resume=resume, threads=threads, overwrite=overwrite,
        checkpoint_every=checkpoint_every)


def _shorthands(model: str | None, batch: int | None, lr: float | None, teaching: float | None,
                sape: int | None, encoding: str | None, network: str | None) -> dict[str, Any]:
    """The `INRConfig` fields given as flags (None: not given)."""
    given = {"model": model, "batch": batch, "lr": lr, "teaching": teaching, "sape": sape,
             "encoding": encoding, "network": network}
    return {k: v for k, v in given.items() if v is not None}


def inr_config(default_model: str, config: str | None, flags: dict[str, Any]) -> Any:
    """The `INRConfig` of a fit: the kind's default model, then ``--config``, then the
    shorthand flags (``--encoding`` / ``--network`` are JSON). ValueError naming the flag or
    the file and the field."""
    from fields.inr import INRConfig

    flags = dict(flags)
    for name in ("encoding", "network"):
        if name in flags:
            try:
                flags[name] = json.loads(flags[name])
            except json.JSONDecodeError as e:
                raise ValueError(f"--{name}: not valid JSON ({e})") from e
    overrides = parse_config(config, "INRConfig")
    where = "INRConfig" if not config else (
        "--config" if config.strip().startswith("{") else config)
    return INRConfig.from_dict({"model": default_model, **overrides, **flags}, where=where)


def _fit(kind: str, source: dict[str, Any], opts: RunOptions, flags: dict[str, Any],
         eval_every: float, noise: float = 0.0, keep: float = 1.0, downsample: int = 1,
         device: str = "cpu") -> None:
    """A fit command's work: config, signal, task, config.json; training; outputs, metrics."""
    from fields.inr import run
    from fields.nn.modules import count_parameters
    wall = time.perf_counter()
    set_threads(opts.threads)
    with guarded():
        opts.check("inr", f"fit {kind}")
        dev = check_device(device)
        cfg = inr_config("siren" if kind == "audio" else "hash", opts.config, flags)
        signal = run.load_signal(run.signal_source(kind, **source), where=f"fields fit {kind}")
        obs = run.observe(signal, noise, keep, downsample, opts.seed)
        out = opts.folder(signal.name, "inr")
        task = run.make_task(signal, obs, cfg, opts.seed, device=dev)
        write_run_config(out, "inr", signal.name, opts, task.config.to_dict(),
                         source=signal.recorded_source(), noise=noise, keep=keep,
                         downsample=downsample, eval_every=eval_every, device=device)
    size = "x".join(map(str, obs.shape))
    say(f"fitting {signal.name} ({kind} {size}, {signal.channels} channel(s)) with "
        f"{task.config.model}; {device_name(device)}; budget {opts.steps} steps / "
        f"{opts.max_seconds:g} s"
        f"{'; resuming ' + opts.resume if opts.resume else ''}; output {out}")
    with guarded(out):
        train_cfg = opts.train_config(eval_every=eval_every)
        state, _ = run.fit(task, signal, obs, train_cfg, out, opts.resume, log=say)
        if not distributed.is_main():
            return  # under torchrun, rank 0 writes the outputs
        recon = run.reconstruct(task.field, signal)
        metrics = {"source": source.get("file") or signal.source.get("builtin"),
                   "model": task.config.model, **signal.sizes(), **run.measure(recon, signal),
                   **run.observation_metrics(recon, signal, obs),
                   "params": count_parameters(task.field), "threads": torch.get_num_threads(),
                   "history": state.history,
                   **run_notes(state)}
        written = run.write_signal_outputs(out, signal, recon)
        write_metrics(out, state.step, state.seconds, time.perf_counter() - wall, metrics)
    quality = ", ".join(f"{k.upper() if k != 'snr_db' else 'SNR'} {metrics[k]:.4g}"
                        for k in ("psnr", "ssim", "snr_db") if metrics.get(k) is not None)
    say(f"{quality} after {state.step} steps, {state.seconds:.1f} s "
        f"({metrics['params']} parameters). Wrote {out}: config.json, {', '.join(written)}, "
        "metrics.json, checkpoint.pt")
    for note in metrics.get("notes", []):
        say(f"note: {note}")


# -- fields eval, fields render, fields bench inr --


def evaluate_inr(checkpoint: str, data: str | None = None) -> dict[str, Any]:
    """`fields eval` of an INR checkpoint: PSNR (images: and SSIM; audio: and SNR) of the
    field rendered at the signal's resolution against the signal it was fitted to (the
    ``source`` of the run's config.json beside the checkpoint), or against the file `data`
    read as the checkpoint's kind of signal. ValueError naming the file and the field."""
    from fields.checkpoint import run_config
    from fields.inr import load_inr, run

    field, described = load_inr(checkpoint)
    kind = described.get("kind")
    if kind not in run.SIGNAL_KINDS:
        raise ValueError(f"{checkpoint}: field 'signal.kind' is {kind!r}; expected one of "
                         f"{run.SIGNAL_KINDS}")
    if data is not None:
        where = data
        frames = int(described["shape"][0]) if kind == "video" else None
        signal = run.read_signal_file(kind, data, max_frames=frames)
        source: dict[str, Any] = {"file": data}
    else:
        where = str(Path(checkpoint).with_name("config.json"))
        source = run_config(checkpoint).get("source")
        if not isinstance(source, dict):
            raise ValueError(f"{where}: no field 'source' saying which signal {checkpoint} was "
                             "fitted to (no such file, or not written by `fields fit`); give "
                             "the signal with --data FILE")
        signal = run.load_signal(source, where=f"{where}: field 'source'")
    try:
        recon = run.reconstruct(field, signal)
    except ValueError as e:
        raise ValueError(f"{where}: {e} (checkpoint {checkpoint})") from e
    return {"signal": kind, "source": source.get("file") or source.get("builtin"),
            **signal.sizes(), **run.measure(recon, signal)}


def bench_inr_cmd(
    image: Annotated[str | None, typer.Argument(help="image file (default: --builtin)")] = None,
    builtin: Annotated[str, typer.Option(help="built-in photograph")] = "camera",
    size: Annotated[int, typer.Option(help="built-in image: longer side")] = 256,
    seconds: Annotated[float, typer.Option(help="training seconds per model")] = 60.0,
    models: Annotated[list[str] | None, typer.Option(
        "--model", help="models to run (repeatable; default: all)")] = None,
    out: Annotated[str, typer.Option(help="folder for the figure and table")] =
        "outputs/bench-inr",
    threads: ThreadsOpt = 0,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """Every INR model on one image with the same training time: PSNR, SSIM, steps,
    parameters, one table, and a PSNR-versus-time figure (psnr_vs_time.png) in OUT."""
    from rich.table import Table

    from fields.bench import INRBenchRow, bench_inr
    from fields.data.images import read_image
    from fields.data.signals import builtin_image
    from fields.inr import MODELS
    from fields.io import write_json
    from fields.plots import write_psnr_time_figure

    set_threads(threads)
    chosen = list(models or MODELS)
    with guarded():
        bad = [m for m in chosen if m not in MODELS]
        if bad:
            raise ValueError(f"unknown model(s) {bad}; expected some of {list(MODELS)}")
        img = read_image(image) if image else builtin_image(builtin, size)
    table = Table(title=f"fields bench inr ({image or builtin}, {img.shape[1]}x{img.shape[0]}, "
                        f"{seconds:g} s each, {torch.get_num_threads()} threads)")
    for col in ("model", "PSNR (dB)", "SSIM", "steps", "seconds", "params", "description"):
        table.add_column(col, justify="right" if col != "description" else "left")
    rows: list[INRBenchRow] = []

    def on_row(row: INRBenchRow) -> None:
        rows.append(row)
        if as_json:
            print(json.dumps(row.as_dict(history=False)), flush=True)
        else:
            say(f"{row.model}: PSNR {row.psnr:.2f} dB, SSIM {row.ssim:.4f}, {row.steps} steps, "
                f"{row.params} parameters")
        table.add_row(row.model, f"{row.psnr:.2f}", f"{row.ssim:.4f}", str(row.steps),
                      f"{row.seconds:.1f}", str(row.params), row.description)

    bench_inr(img, chosen, seconds, on_row=on_row)
    out_dir = Path(out)
    write_psnr_time_figure(out_dir / "psnr_vs_time.png", {r.model: r.history for r in rows},
                           f"{image or builtin} ({img.shape[1]}x{img.shape[0]})")
    write_json(out_dir / "bench.json", [r.as_dict() for r in rows])
    if not as_json:
        console.print(table)
    say(f"wrote {out_dir}/psnr_vs_time.png and bench.json")


def render_inr(checkpoint: str, out: str | None, scale: float) -> Path:
    """`fields render` of an INR checkpoint: the signal at `scale` times its resolution, in
    the format of its kind (image .png, video .mp4, audio .wav, volume .npy)."""
    from fields.data.images import write_image
    from fields.inr import load_inr, render_signal
    from fields.io import save_npy_atomic

    try:
        model, signal = load_inr(checkpoint)
        kind, shape = signal.get("kind"), tuple(int(n) for n in signal["shape"])
        values = render_signal(model, shape, scale).clamp(0, 1)
        if kind == "image":
            target = Path(out or "render.png")
            write_image(target, values)
        elif kind == "video":
            target = Path(out or "render.mp4")
            from fields.io import write_video

            write_video(target, list(values), fps=24)
        elif kind == "audio":
            from fields.data.signals import write_audio

            target = Path(out or "render.wav")
            rate = round(int(signal.get("rate", 16000)) * scale)
            write_audio(target, values * 2.0 - 1.0, rate)
        elif kind == "volume":
            lo, hi = signal.get("range", [0.0, 1.0])
            target = Path(out or "render.npy")
            save_npy_atomic(target, (values * (hi - lo) + lo).numpy().astype("float32"))
        else:
            raise ValueError(f"{checkpoint}: field 'signal' has unknown kind {kind!r}")
    except (ValueError, OSError) as e:
        raise error(e) from e
    console.print(f"wrote {target} ({' x '.join(map(str, values.shape))})", highlight=False,
                  markup=False)
    return target
