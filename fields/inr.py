"""Implicit neural representations: fit a coordinate network to a signal.

- `MODELS`: the zoo, each a configuration of `FusedMLP` + encodings + activation where one
  exists (hash grid + MLP, SIREN, FINER, Gaussian, ReLU + positional encoding, random Fourier
  features), or a network of `fields.nn.inr_layers` (WIRE, the complex-wavelet low-pass /
  band-pass split, FAN, SL2A-INR).
- `fit_signal`: any signal sampled on a grid (images, audio, volumes, video: coordinates in
  [0, 1]^d, `fields.data.signals.grid_coords`), full batch or sampled, with nonparametric
  teaching (train on the largest errors) and SAPE-style progressive masking; a time budget.
- `render_signal`: the field at any resolution (it is continuous); `save_inr_checkpoint` /
  `load_inr` for `fields render`.
- `fit_image`: `fit_signal` for an (H, W, C) image.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from fields.data.images import psnr
from fields.data.signals import grid_coords
from fields.nn.encoding import InputEncoding
from fields.nn.inr_layers import FANNet, GaborNet, SL2ANet, WaveletSplitNet
from fields.nn.mlp import FusedMLP
from fields.nn.modules import NetworkWithInputEncoding
from fields.nn.progressive import SpatialProgress


def default_image_encoding(height: int, width: int) -> dict[str, Any]:
    """A 2-D hash grid whose finest level matches the image resolution (16 levels, 2 features,
    2^18 entries per level, base resolution 16)."""
    finest = max(height, width)
    n_levels = 16
    return {
        "otype": "HashGrid",
        "n_levels": n_levels,
        "n_features_per_level": 2,
        "log2_hashmap_size": 18,
        "base_resolution": 16,
        "per_level_scale": math.exp(math.log(max(finest, 32) / 16) / (n_levels - 1)),
    }


DEFAULT_IMAGE_NETWORK: dict[str, Any] = {
    "otype": "FullyFusedMLP",
    "activation": "ReLU",
    "output_activation": "None",
    "n_neurons": 64,
    "n_hidden_layers": 2,
}


def fit_image(image: torch.Tensor, model: str = "hash", **kwargs: Any) -> SignalFit:
    """Fits `model` to an (H, W, C) image in [0, 1] (C = 1, 3 or 4): `fit_signal` on the pixel
    centres, with the image's size as the finest resolution; keyword arguments go to it."""
    if image.dim() != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"fit_image: expected an (H, W, 1|3|4) image, got {tuple(image.shape)}")
    h, w, c = image.shape
    return fit_signal(grid_coords((h, w)), image.reshape(-1, c), model,
                      finest=max(h, w), **kwargs)


# -- the model zoo: every INR of `fields fit image --model` and `fields bench inr` --


@dataclass(frozen=True)
class INRModel:
    """A named INR configuration: how to build it for (n_in, n_out), the coordinates it
    expects ("unit": [0, 1], "signed": [-1, 1]), its learning rate, and its default batch of
    samples per step (None: every sample, full batch)."""

    name: str
    description: str
    build: Callable[[int, int, int], nn.Module]  # (n_in, n_out, finest resolution) -> module
    coords: str = "signed"
    lr: float = 1e-3
    batch: int | None = 2**14


def _fused(activation: str, omega0: float = 30.0, width: int = 256, depth: int = 3):
    def build(n_in: int, n_out: int, finest: int) -> nn.Module:
        return FusedMLP(n_in, n_out, width, depth, activation, bias=True, omega0=omega0)
    return build


def _encoded(encoding: dict[str, Any], width: int = 256, depth: int = 3):
    def build(n_in: int, n_out: int, finest: int) -> nn.Module:
        net = {"otype": "FullyFusedMLP", "activation": "ReLU", "output_activation": "None",
               "n_neurons": width, "n_hidden_layers": depth}
        return NetworkWithInputEncoding(n_in, n_out, encoding, net)
    return build


def _hash(n_in: int, n_out: int, finest: int) -> nn.Module:
    enc = default_image_encoding(finest, finest) if n_in == 2 else {
        **default_image_encoding(finest, finest), "n_levels": 16, "log2_hashmap_size": 19}
    return NetworkWithInputEncoding(n_in, n_out, enc, DEFAULT_IMAGE_NETWORK)


def _gabor(n_in: int, n_out: int, finest: int) -> nn.Module:
    return GaborNet(n_in, n_out, width=180, depth=3, omega0=20.0, s0=10.0)


def _split(n_in: int, n_out: int, finest: int) -> nn.Module:
    return WaveletSplitNet(n_in, n_out, width=160, depth=3, omega0=20.0, s0=10.0)


def _fan(n_in: int, n_out: int, finest: int) -> nn.Module:
    return FANNet(n_in, n_out, width=256, depth=3, input_scale=float(finest) / 4.0)


def _sl2a(n_in: int, n_out: int, finest: int) -> nn.Module:
    return SL2ANet(n_in, n_out, width=256, depth=3, degree=64)


MODELS: dict[str, INRModel] = {m.name: m for m in (
    INRModel("hash", "multiresolution hash grid + 2 x 64 ReLU MLP (instant-ngp)", _hash,
             coords="unit", lr=1e-2, batch=2**16),
    INRModel("siren", "SIREN: 3 x 256 sine MLP, omega0 30, SIREN initialisation",
             _fused("Sine", 30.0), lr=2e-3),
    INRModel("finer", "FINER: 3 x 256 variable-periodic sine MLP, sin(omega0 (|z| + 1) z)",
             _fused("Finer", 30.0), lr=2e-3),
    INRModel("gauss", "3 x 256 MLP with the Gaussian activation exp(-(10 z)^2)",
             _fused("Gaussian", 10.0), lr=1e-3),
    INRModel("relu_pe", "3 x 256 ReLU MLP on NeRF's positional encoding (10 frequencies)",
             _encoded({"otype": "Frequency", "n_frequencies": 10}), coords="unit", lr=1e-3),
    INRModel("rff", "3 x 256 ReLU MLP on 256 random Fourier features (scale 10)",
             _encoded({"otype": "RandomFourierFeatures", "n_frequencies": 128, "scale": 10.0}),
             coords="unit", lr=1e-3),
    INRModel("wire", "WIRE: 3 x 180 complex Gabor wavelet MLP (omega0 20, s0 10)", _gabor,
             lr=5e-3),
    INRModel("wavelet_split", "complex wavelets, low-pass (Gaussian MLP) + band-pass (Gabor)",
             _split, lr=5e-3),
    INRModel("fan", "FAN: 3 Fourier Analysis Network layers of 256", _fan, lr=1e-3),
    INRModel("sl2a", "SL2A-INR: Chebyshev learnable activation (degree 64) + modulated ReLU MLP",
             _sl2a, lr=1e-3),
)}


def get_model(name: str) -> INRModel:
    """The `MODELS` entry called `name`; ValueError naming the known ones otherwise."""
    if name not in MODELS:
        raise ValueError(f"unknown INR model {name!r}; expected one of {', '.join(MODELS)}")
    return MODELS[name]


class CoordinateField(nn.Module):
    """A model of `MODELS` on coordinates in [0, 1] (mapped to the model's own range), or, with
    `custom` = {"encoding": {...}, "network": {...}} (tiny-cuda-nn style configs), that encoding
    and network (model name "custom", unit coordinates, lr 1e-2, batch 2^16)."""

    def __init__(self, model: str, n_in: int, n_out: int, finest: int, seed: int = 1337,
                 custom: Mapping[str, Any] | None = None, sape: int | None = None) -> None:
        super().__init__()
        if custom is not None:
            enc = custom.get("encoding") or default_image_encoding(finest, finest)
            net = custom.get("network") or DEFAULT_IMAGE_NETWORK
            self.spec = INRModel("custom", "custom encoding and network",
                                 lambda i, o, f: NetworkWithInputEncoding(i, o, enc, net, seed),
                                 coords="unit", lr=1e-2, batch=2**16)
            model = "custom"
            self.custom: dict[str, Any] | None = {"encoding": enc, "network": net}
        else:
            self.spec = get_model(model)
            self.custom = None
        self.model_name, self.n_in, self.n_out, self.finest = model, n_in, n_out, finest
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = self.spec.build(n_in, n_out, finest)
        # SAPE-style spatially adaptive progressive masking: every encoding with levels gets a
        # grid of per-cell progress (`sape` cells per axis), advanced by `fit_signal`
        self.sape = sape
        self.progress: list[SpatialProgress] = []
        if sape is not None:
            for m in self.net.modules():
                if isinstance(m, InputEncoding) and m.n_levels > 0:
                    prog = SpatialProgress(n_in, m.n_levels, int(sape))
                    m.set_progress(prog)
                    self.progress.append(prog)
            if not self.progress:
                raise ValueError(f"SAPE masking needs an encoding with levels; model "
                                 f"{model!r} has none (use relu_pe or hash)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spec.coords == "signed":
            x = x * 2.0 - 1.0
        return self.net(x)

    def describe(self) -> dict[str, Any]:
        """What `from_description` needs to rebuild this field (for checkpoints)."""
        return {"model": self.model_name, "n_in": self.n_in, "n_out": self.n_out,
                "finest": self.finest, "custom": self.custom, "sape": self.sape}

    @classmethod
    def from_description(cls, d: Mapping[str, Any]) -> CoordinateField:
        try:
            return cls(str(d["model"]), int(d["n_in"]), int(d["n_out"]), int(d["finest"]),
                       custom=d.get("custom"), sape=d.get("sape"))
        except KeyError as e:
            raise ValueError(f"INR description: missing field {e}") from e


@dataclass
class SignalFit:
    field: CoordinateField
    steps: int
    seconds: float
    psnr: float
    history: list[dict[str, float]] = field(default_factory=list)

    def predict(self, coords: torch.Tensor, chunk: int = 2**16) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([self.field(c) for c in coords.split(chunk)])


def fit_signal(
    coords: torch.Tensor,
    values: torch.Tensor,
    model: str = "hash",
    *,
    custom: Mapping[str, Any] | None = None,
    finest: int = 256,
    seconds: float = 60.0,
    max_steps: int = 1_000_000,
    batch: int | str | None = "default",
    lr: float | None = None,
    mask: torch.Tensor | None = None,
    teaching: float = 0.0,
    sape: int | None = None,
    sape_threshold: float = 1e-4,
    sape_rate: float = 0.05,
    eval_every: float = 2.0,
    target: torch.Tensor | None = None,
    seed: int = 1337,
    on_eval: Callable[[dict[str, float]], None] | None = None,
) -> SignalFit:
    """Fits `model` (a name of `MODELS`) to samples `values` (N, C) at `coords` (N, d) in
    [0, 1] (`custom`: encoding and network configs instead, see `CoordinateField`; `finest`:
    the signal's finest resolution, which sizes grid encodings) for `seconds` of training
    (evaluation not counted) or `max_steps`.

    Adam with the model's learning rate decayed exponentially to a tenth over the budget; each
    step takes `batch` random samples (the model's default; None: all of them). `mask` (N,)
    keeps only the True samples for training (inpainting). `teaching` in (0, 1): nonparametric
    teaching (INT): every 10 steps the fraction `teaching` of the training samples with the
    largest error is selected and the steps train on those. `sape` (cells per axis): SAPE-style
    spatially adaptive progressive masking (Hertz et al. 2021) of the model's encodings with
    levels: every cell starts with one level revealed, and each step the cells whose mean
    squared error on the batch is above `sape_threshold` reveal `sape_rate` more. Every
    `eval_every` seconds of training the PSNR of the prediction of every sample against
    `target` (default: `values`) is measured and passed to `on_eval` as {"step", "seconds",
    "loss", "psnr"}.
    """
    if coords.dim() != 2 or values.dim() != 2 or coords.shape[0] != values.shape[0]:
        raise ValueError(f"fit_signal: expected coords (N, d) and values (N, C), got "
                         f"{tuple(coords.shape)} and {tuple(values.shape)}")
    if not 0.0 <= teaching < 1.0:
        raise ValueError(f"fit_signal: teaching must be in [0, 1), got {teaching!r}")
    net = CoordinateField(model, coords.shape[1], values.shape[1], finest, seed, custom, sape)
    spec = net.spec
    coords, values = coords.float(), values.float()
    reference = values if target is None else target.float().reshape(values.shape)
    train_idx = torch.arange(coords.shape[0]) if mask is None else mask.nonzero()[:, 0]
    if train_idx.numel() == 0:
        raise ValueError("fit_signal: the mask keeps no samples")
    size = spec.batch if batch == "default" else batch
    size = train_idx.numel() if size is None else min(int(size), train_idx.numel())
    base_lr = spec.lr if lr is None else lr
    opt = torch.optim.Adam(net.parameters(), lr=base_lr, betas=(0.9, 0.99), eps=1e-15)
    gen = torch.Generator().manual_seed(seed)
    pool = train_idx
    history: list[dict[str, float]] = []
    trained, step, next_eval, last = 0.0, 0, 0.0, math.nan

    def evaluate() -> float:
        with torch.no_grad():
            pred = torch.cat([net(c) for c in coords.split(2**16)])
        return psnr(pred, reference)

    while step < max_steps and trained < seconds:
        t0 = time.perf_counter()
        progress = max(trained / seconds, step / max_steps)
        for group in opt.param_groups:
            group["lr"] = base_lr * 10.0 ** (-progress)
        if teaching > 0.0 and step % 10 == 0:
            with torch.no_grad():
                err = torch.cat([(net(c) - v).square().sum(-1) for c, v in
                                 zip(coords[train_idx].split(2**16),
                                     values[train_idx].split(2**16), strict=True)])
            keep = max(size, int(teaching * train_idx.numel()))
            pool = train_idx[err.topk(min(keep, train_idx.numel())).indices]
        idx = pool if size >= pool.numel() else pool[
            torch.randint(0, pool.numel(), (size,), generator=gen)]
        per_sample = (net(coords[idx]) - values[idx]).square()
        loss = per_sample.mean()
        for prog in net.progress:
            prog.update(coords[idx], per_sample.detach().mean(-1), sape_threshold, sape_rate)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        trained += time.perf_counter() - t0
        step += 1
        last = float(loss.detach())
        if trained >= next_eval or trained >= seconds or step == max_steps:
            next_eval = trained + eval_every
            record = {"step": step, "seconds": trained, "loss": last, "psnr": evaluate()}
            history.append(record)
            if on_eval is not None:
                on_eval(record)
    final = history[-1]["psnr"] if history and history[-1]["step"] == step else evaluate()
    return SignalFit(field=net, steps=step, seconds=trained, psnr=final, history=history)


# -- checkpoints and continuous rendering --


def save_inr_checkpoint(path: Any, fit_field: CoordinateField, signal: Mapping[str, Any]) -> None:
    """checkpoint.pt: the field, how to rebuild it, and the signal's description `signal`
    ({"kind": "image" | "audio" | "volume" | "video", "shape": [...], ...})."""
    from fields.train import save_checkpoint

    save_checkpoint(path, fit_field, extra={"kind": "inr", "inr": fit_field.describe(),
                                            "signal": dict(signal)})


def load_inr(path: Any) -> tuple[CoordinateField, dict[str, Any]]:
    """The field of a checkpoint written by `save_inr_checkpoint`, and its signal description."""
    from fields.train import read_checkpoint

    payload = read_checkpoint(path)
    if payload.get("kind") != "inr" or not isinstance(payload.get("inr"), dict):
        raise ValueError(f"{path}: not an INR checkpoint (field 'kind' is "
                         f"{payload.get('kind')!r}, expected 'inr')")
    try:
        model = CoordinateField.from_description(payload["inr"])
    except ValueError as e:
        raise ValueError(f"{path}: field 'inr': {e}") from e
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as e:
        raise ValueError(f"{path}: field 'state_dict' does not match the INR: {e}") from e
    signal = payload.get("signal")
    if not isinstance(signal, dict) or "shape" not in signal:
        raise ValueError(f"{path}: field 'signal' is missing or has no 'shape'")
    return model, signal


def render_signal(model: CoordinateField, shape: Sequence[int], scale: float = 1.0,
                  chunk: int = 2**16) -> torch.Tensor:
    """The field sampled on a grid `scale` times finer than `shape` (the signal's sample grid,
    without channels): any resolution, the representation is continuous. Returns
    (*new_shape, C), unclamped."""
    if not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"render_signal: scale must be a positive number, got {scale!r}")
    new = tuple(max(1, round(n * scale)) for n in shape)
    coords = grid_coords(new)
    with torch.no_grad():
        out = torch.cat([model(c) for c in coords.split(chunk)])
    return out.reshape(*new, -1)


def ssim(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """Structural similarity of (H, W, C) images in [0, 1] (scikit-image, Gaussian window as
    Wang et al. 2004)."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(
        prediction.clamp(0, 1).numpy(), target.numpy(), data_range=1.0, channel_axis=-1,
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False))
