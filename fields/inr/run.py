"""The work of `fields fit image|audio|volume|video` and `fields eval` of an INR: the signal
(`load_signal`, from a source that config.json records so it can be loaded again), what the
field is trained on (`observe`: noise, missing samples, a coarser grid), the fit on the
training loop (`fit`), the measurements (`measure`) and the pictures and files
(`write_signal_outputs`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fields.data.images import psnr
from fields.data.signals import grid_coords
from fields.inr.model import (
    CoordinateField,
    INRConfig,
    SignalTask,
    final_evaluation,
    inr_checkpoint_extra,
    render_signal,
)
from fields.train import TrainConfig, TrainState, seed_everything, train

SIGNAL_KINDS = ("image", "audio", "volume", "video")


@dataclass
class Signal:
    """A signal on its sample grid.

    Attributes:
        kind: "image", "audio", "volume" or "video".
        name: a short name (the file's stem, or the built-in's name): the output folder's.
        grid: (*shape, C) values in [0, 1] ((H, W, C) image, (N, C) audio, (D, H, W, C)
            volume, (T, H, W, C) video); audio amplitudes a are stored as (a + 1) / 2.
        source: where it comes from, as `load_signal` reads it back: {"kind", "file"} or
            {"kind", "builtin", "size"} (video: also "max_frames").
        rate: audio's sample rate (Hz).
        value_range: a volume's original (min, max), which [0, 1] maps to.
    """

    kind: str
    name: str
    grid: torch.Tensor
    source: dict[str, Any]
    rate: int = 0
    value_range: tuple[float, float] = (0.0, 1.0)

    @property
    def shape(self) -> tuple[int, ...]:
        """The sample grid's shape, without channels."""
        return tuple(self.grid.shape[:-1])

    @property
    def channels(self) -> int:
        """Values per sample."""
        return int(self.grid.shape[-1])

    def sizes(self) -> dict[str, Any]:
        """The sizes metrics.json reports (height/width, samples/rate, shape, frames)."""
        s = self.shape
        by_kind = {
            "image": lambda: {"height": s[0], "width": s[1]},
            "audio": lambda: {"samples": s[0], "rate": self.rate},
            "volume": lambda: {"shape": list(s)},
            "video": lambda: {"frames": s[0], "height": s[1], "width": s[2]},
        }
        return {**by_kind[self.kind](), "channels": self.channels}

    def recorded_source(self) -> dict[str, Any]:
        """`source` as config.json records it: a file by its absolute path, so that `fields
        eval` finds it from any folder."""
        if "file" not in self.source:
            return dict(self.source)
        return {**self.source, "file": str(Path(self.source["file"]).resolve())}

    def describe(self, fitted_shape: tuple[int, ...] | None = None) -> dict[str, Any]:
        """The checkpoint's ``signal`` field: kind, the grid the field was fitted on
        (`fitted_shape`, default the signal's), channels, and the rate / range / source."""
        d: dict[str, Any] = {"kind": self.kind, "shape": list(fitted_shape or self.shape),
                             "channels": self.channels}
        if self.kind == "audio":
            d["rate"] = self.rate
        if self.kind == "volume":
            d["range"] = list(self.value_range)
        if self.kind == "image":
            d["source"] = self.source.get("file") or self.source.get("builtin")
        return d


def signal_source(kind: str, file: str | None = None, builtin: str | None = None,
                  size: int | None = None, max_frames: int | None = None) -> dict[str, Any]:
    """The source of a signal (`load_signal` reads it): a file, or a built-in (image:
    "procedural" or a scikit-image photograph, `size` its longer side; audio and volume:
    "synthetic"); a video's also says how many frames to read at most."""
    if kind not in SIGNAL_KINDS:
        raise ValueError(f"unknown signal kind {kind!r}; expected one of {SIGNAL_KINDS}")
    if file is not None and builtin is not None:
        raise ValueError("give either a file or --builtin, not both")
    d: dict[str, Any] = {"kind": kind}
    if file is not None:
        d["file"] = str(file)
    else:
        d["builtin"] = builtin or {"image": "procedural", "audio": "synthetic",
                                   "volume": "synthetic", "video": None}[kind]
        if d["builtin"] is None:
            raise ValueError("a video needs a file or a folder of frames")
        if kind == "image":
            d["size"] = 512 if d["builtin"] == "procedural" else int(size or 256)
    if kind == "video":
        d["max_frames"] = int(max_frames or 64)
    return d


def load_signal(source: Mapping[str, Any], where: str = "source") -> Signal:
    """The signal `source` (see `signal_source`) describes; errors name `where` (e.g. the
    config.json) and the field, or the file."""
    from fields.data.images import procedural_image, read_image
    from fields.data.signals import (
        builtin_image,
        read_audio,
        read_video,
        read_volume,
        synthetic_audio,
        synthetic_volume,
    )

    kind, file, builtin = source.get("kind"), source.get("file"), source.get("builtin")
    if kind not in SIGNAL_KINDS:
        raise ValueError(f"{where}: field 'kind' is {kind!r}; expected one of {SIGNAL_KINDS}")
    if (file is None) == (builtin is None):
        raise ValueError(f"{where}: expected exactly one of the fields 'file' and 'builtin'")
    if file is not None and not isinstance(file, str):
        raise ValueError(f"{where}: field 'file' must be a path, got {file!r}")
    name = Path(file).stem if file is not None else str(builtin)
    src = dict(source)
    if kind == "image":
        if file is not None:
            return Signal(kind, name, read_image(file), src)
        size = int(source.get("size", 256))
        img = procedural_image(size) if builtin == "procedural" else builtin_image(builtin, size)
        return Signal(kind, name, img, src)
    if kind == "audio":
        if file is not None:
            samples, rate = read_audio(file)
        elif builtin == "synthetic":
            samples, rate, name = synthetic_audio(), 16000, "synthetic-audio"
        else:
            raise ValueError(f"{where}: field 'builtin' of audio must be 'synthetic', got "
                             f"{builtin!r}")
        return Signal(kind, name, (samples + 1.0) / 2.0, src, rate=rate, value_range=(-1.0, 1.0))
    if kind == "volume":
        if file is not None:
            vol, (lo, hi) = read_volume(file)
        elif builtin == "synthetic":
            vol, (lo, hi), name = synthetic_volume(), (0.0, 1.0), "synthetic-volume"
        else:
            raise ValueError(f"{where}: field 'builtin' of a volume must be 'synthetic', got "
                             f"{builtin!r}")
        return Signal(kind, name, vol, src, value_range=(float(lo), float(hi)))
    if file is None:
        raise ValueError(f"{where}: a video needs field 'file'")
    return Signal(kind, name, read_video(file, int(source.get("max_frames", 64))), src)


@dataclass
class Observation:
    """What the field is trained on: samples of the signal, perhaps noisy, with some missing,
    or on a coarser grid.

    Attributes:
        coords: (N, d) sample coordinates in [0, 1].
        values: (N, C) observed values.
        shape: the observed grid (without channels).
        mask: (N,) the samples trained on (None: all).
        grid: (*shape, C) the observed values on their grid.
        noise, keep, downsample: how they were made (0, 1, 1: the signal itself).
    """

    coords: torch.Tensor
    values: torch.Tensor
    shape: tuple[int, ...]
    mask: torch.Tensor | None
    grid: torch.Tensor
    noise: float = 0.0
    keep: float = 1.0
    downsample: int = 1


def observe(signal: Signal, noise: float = 0.0, keep: float = 1.0, downsample: int = 1,
            seed: int = 0) -> Observation:
    """The samples to fit: the signal's grid (images: `downsample` times coarser, by area
    averaging), plus Gaussian noise of std `noise` (clamped to [0, 1]), with only a random
    fraction `keep` of the samples trained on (noise first, then the mask, from one generator
    seeded with `seed`)."""
    if not 0.0 < keep <= 1.0 or not noise >= 0 or downsample < 1:
        raise ValueError(f"--keep must be in (0, 1], --noise >= 0, --downsample >= 1; got "
                         f"{keep}, {noise}, {downsample}")
    grid = signal.grid
    if downsample > 1:
        if signal.kind != "image":
            raise ValueError(f"--downsample is for images, not a {signal.kind}")
        from fields.data.signals import resize_image

        h, w = signal.shape
        grid = resize_image(grid, max(1, h // downsample), max(1, w // downsample))
    gen = torch.Generator().manual_seed(seed)
    if noise > 0:
        grid = (grid + noise * torch.randn(grid.shape, generator=gen)).clamp(0, 1)
    shape = tuple(grid.shape[:-1])
    n = math.prod(shape)
    mask = torch.rand(n, generator=gen) < keep if keep < 1.0 else None
    return Observation(grid_coords(shape), grid.reshape(n, -1), shape, mask, grid, noise, keep,
                       downsample)


def make_task(signal: Signal, obs: Observation, config: INRConfig, seed: int,
              device: str | torch.device = "cpu") -> SignalTask:
    """The `SignalTask` fitting `config`'s model to `obs` (generators seeded with `seed`) on
    `device`."""
    seed_everything(seed)
    return SignalTask(obs.coords, obs.values, config, finest=max(obs.shape), seed=seed,
                      mask=obs.mask, device=device)


def fit(task: SignalTask, signal: Signal, obs: Observation, train_config: TrainConfig,
        out: Path, resume: str | None = None,
        on_eval: Callable[[TrainState, dict[str, Any]], None] | None = None,
        show_progress: bool = True,
        log: Callable[[str], None] | None = None) -> tuple[TrainState, dict[str, float]]:
    """Trains `task` with `fields.train.train`, checkpointing to ``out/checkpoint.pt`` (an
    INR checkpoint `fields render` and `fields eval` read, with the optimiser for
    ``--resume``); returns the state and the final evaluation on the observed samples."""
    state = train(task, train_config, checkpoint=out / "checkpoint.pt", resume=resume,
                  checkpoint_extra=inr_checkpoint_extra(task.field, signal.describe(obs.shape)),
                  on_eval=on_eval, show_progress=show_progress, log=log)
    return state, final_evaluation(task, state)


def reconstruct(field: CoordinateField, signal: Signal) -> torch.Tensor:
    """The field sampled on the signal's grid: (*signal.shape, C), clamped to [0, 1]."""
    if field.n_in != len(signal.shape) or field.n_out != signal.channels:
        raise ValueError(
            f"the field maps {field.n_in}-D coordinates to {field.n_out} channel(s); the "
            f"{signal.kind} {signal.name!r} has {len(signal.shape)}-D samples of "
            f"{signal.channels} channel(s)")
    return render_signal(field, signal.shape).clamp(0, 1)


def measure(recon: torch.Tensor, signal: Signal) -> dict[str, Any]:
    """Quality of `recon` (*signal.shape, C) in [0, 1] against the signal: PSNR (audio: on
    amplitudes mapped to [0, 1], and the SNR in dB; images: and SSIM, `fields.metrics.ssim`)."""
    from fields.metrics import ssim, ssim_note

    target = signal.grid
    metrics: dict[str, Any] = {"psnr": psnr(recon, target)}
    if signal.kind == "image":
        metrics["ssim"] = ssim(recon, target)
        note = ssim_note(target.shape[0], target.shape[1])
        if note is not None:
            metrics["notes"] = [note]
    if signal.kind == "audio":
        a, b = target * 2.0 - 1.0, recon * 2.0 - 1.0
        noise_power = (b - a).square().mean().item()
        metrics["snr_db"] = 10 * math.log10(max(a.square().mean().item(), 1e-20)
                                            / max(noise_power, 1e-20))
    return metrics


def observation_metrics(recon: torch.Tensor, signal: Signal, obs: Observation) -> dict[str, Any]:
    """What the tasks of `observe` report: PSNR of the noisy input, of the reconstruction on
    the samples that were not trained on, of a bicubic upsampling of the coarse input."""
    out: dict[str, Any] = {}
    if obs.noise > 0:
        out["noise"] = obs.noise
        if obs.shape == signal.shape:
            out["psnr_noisy_input"] = psnr(obs.grid, signal.grid)
    if obs.mask is not None:
        missing = ~obs.mask.reshape(obs.shape)
        out["keep"] = obs.keep
        out["psnr_missing_pixels"] = (psnr(recon[missing], signal.grid[missing])
                                      if obs.shape == signal.shape and missing.any() else None)
    if obs.downsample > 1:
        from fields.data.signals import resize_image

        out["downsample"] = obs.downsample
        out["psnr_bicubic"] = psnr(resize_image(obs.grid, *signal.shape), signal.grid)
    return out


def write_signal_outputs(out: Path, signal: Signal, recon: torch.Tensor) -> list[str]:
    """The pictures and files of a reconstruction `recon` (*signal.shape, C) in [0, 1], by
    the signal's kind: image target.png, reconstruction.png, error.png; audio
    reconstruction.wav, waveform.png; volume reconstruction.npy (in the input's value range),
    slices.png; video frame_KKK.png and error_KKK.png (first, middle, last). Returns the
    names written."""
    from fields.data.images import error_map, write_image

    if signal.kind == "image":
        write_image(out / "target.png", signal.grid)
        write_image(out / "reconstruction.png", recon)
        write_image(out / "error.png", error_map(recon, signal.grid))
        return ["target.png", "reconstruction.png", "error.png"]
    if signal.kind == "audio":
        from fields.data.signals import write_audio
        from fields.plots import write_waveform_figure

        samples, back = signal.grid * 2.0 - 1.0, recon * 2.0 - 1.0
        write_audio(out / "reconstruction.wav", back, signal.rate)
        write_waveform_figure(out / "waveform.png", samples, back, signal.rate)
        return ["reconstruction.wav", "waveform.png"]
    if signal.kind == "volume":
        from fields.io import save_npy_atomic
        from fields.plots import write_slices_figure

        lo, hi = signal.value_range
        save_npy_atomic(out / "reconstruction.npy",
                        (recon * (hi - lo) + lo).numpy().astype("float32"))
        write_slices_figure(out / "slices.png", signal.grid, recon)
        return ["reconstruction.npy", "slices.png"]
    t = signal.shape[0]
    names = []
    for k in sorted({0, t // 2, t - 1}):
        write_image(out / f"frame_{k:03d}.png", recon[k])
        write_image(out / f"error_{k:03d}.png", error_map(recon[k], signal.grid[k]))
        names += [f"frame_{k:03d}.png", f"error_{k:03d}.png"]
    return names


def read_signal_file(kind: str, path: str, max_frames: int | None = None) -> Signal:
    """The file `path` read as a signal of `kind` (what `fields eval --data` measures
    against)."""
    return load_signal(signal_source(kind, file=path, max_frames=max_frames), where=path)
