"""Implicit neural representations: fit a coordinate network to a signal.

- `MODELS`: the zoo, each a configuration of `FusedMLP` + encodings + activation where one
  exists (hash grid + MLP, SIREN, FINER, Gaussian, ReLU + positional encoding, random Fourier
  features), or a network of `fields.nn.inr_layers` (WIRE, the complex-wavelet low-pass /
  band-pass split, FAN, SL2A-INR).
- `INRConfig`: how a field is fitted (model, batch, learning rate, teaching, SAPE), the
  dataclass that ``--config`` overrides.
- `SignalTask`: one fit as a task of `fields.train.train` (its step, evaluation and state), on
  any signal sampled on a grid (images, audio, volumes, video: coordinates in [0, 1]^d,
  `fields.data.signals.grid_coords`), full batch or sampled, with nonparametric teaching
  (train on the largest errors) and SAPE-style progressive masking; `fit_signal` runs one
  under a step and time budget.
- `render_signal`: the field at any resolution (it is continuous); `save_inr_checkpoint` /
  `load_inr` for `fields render`.
- `fit_image`: `fit_signal` for an (H, W, C) image.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from dataclasses import field as dataclass_field
from typing import Any

import torch
from torch import nn

from fields import distributed
from fields.config import dataclass_from_dict
from fields.data.images import psnr
from fields.data.signals import grid_coords
from fields.nn.encoding import InputEncoding
from fields.nn.inr_layers import FANNet, GaborNet, SL2ANet, WaveletSplitNet
from fields.nn.mlp import FusedMLP, use_cuda_kernels
from fields.nn.modules import NetworkWithInputEncoding
from fields.nn.progressive import SpatialProgress
from fields.train import TrainConfig, TrainState, train


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


# -- the configuration of a fit --


@dataclass
class INRConfig:
    """How an INR is fitted (``fields fit image|audio|volume|video --config``).

    Attributes:
        model: a name of `MODELS`, or "custom" with `encoding` / `network`.
        encoding, network: tiny-cuda-nn style configs of a custom model (either one given:
            that encoding and network instead of `model`; the other one defaults to the
            image hash grid / the 2 x 64 ReLU MLP).
        batch: samples per step (0: the model's default; -1: every sample, full batch).
        lr: Adam's learning rate (0: the model's default).
        lr_decay: the factor the learning rate is decayed by, exponentially, over the budget.
        teaching: nonparametric teaching (INT): every `teaching_every` steps, train on this
            fraction of the training samples with the largest error (0: off; < 1).
        teaching_every: steps between teaching selections.
        sape: SAPE-style spatially adaptive progressive masking of the encoding's levels with
            this many cells per axis (0: off; models with a level encoding: hash, relu_pe).
        sape_threshold: cells whose mean squared error on a batch is above this reveal more.
        sape_rate: levels revealed per step by such a cell.
    """

    model: str = "hash"
    encoding: dict[str, Any] | None = None
    network: dict[str, Any] | None = None
    batch: int = 0
    lr: float = 0.0
    lr_decay: float = 0.1
    teaching: float = 0.0
    teaching_every: int = 10
    sape: int = 0
    sape_threshold: float = 1e-4
    sape_rate: float = 0.05

    @property
    def custom(self) -> dict[str, Any] | None:
        """{"encoding", "network"} of a custom model, None for a model of `MODELS`."""
        if self.encoding is None and self.network is None:
            return None
        return {"encoding": self.encoding, "network": self.network}

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-able dict (`from_dict` reads it back)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "INRConfig") -> INRConfig:
        """The config with the fields of `d` (the others default); ValueError naming `where`
        and the unknown or invalid field."""
        cfg = dataclass_from_dict(cls, d, where)
        cfg.check(where)
        return cfg

    def check(self, where: str = "INRConfig") -> None:
        """ValueError naming `where` and the field when a value is out of range."""
        for name in ("encoding", "network"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, Mapping):
                raise ValueError(f"{where}: field {name!r} must be a JSON object, got {v!r}")
        if self.custom is None:
            if self.model == "custom":
                raise ValueError(f"{where}: model 'custom' needs field 'encoding' or 'network'")
            if self.model not in MODELS:
                raise ValueError(f"{where}: unknown INR model {self.model!r}; expected one of "
                                 f"{', '.join(MODELS)}")
        checks = [
            ("batch", isinstance(self.batch, int) and self.batch >= -1,
             "an integer >= -1 (0: the model's default; -1: every sample)"),
            ("lr", _number(self.lr) and self.lr >= 0, "a number >= 0 (0: the model's default)"),
            ("lr_decay", _number(self.lr_decay) and 0 < self.lr_decay <= 1, "in (0, 1]"),
            ("teaching", _number(self.teaching) and 0 <= self.teaching < 1, "in [0, 1)"),
            ("teaching_every", isinstance(self.teaching_every, int) and self.teaching_every >= 1,
             "an integer >= 1"),
            ("sape", isinstance(self.sape, int) and self.sape >= 0, "an integer >= 0 (0: off)"),
            ("sape_threshold", _number(self.sape_threshold), "a number"),
            ("sape_rate", _number(self.sape_rate) and self.sape_rate >= 0, "a number >= 0"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"{where}: {name} must be {expected}, got "
                                 f"{getattr(self, name)!r}")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# -- one fit, as a task of the training loop --


class SignalTask:
    """One INR fit for `fields.train.train`: a `CoordinateField` on samples `values` (N, C)
    at `coords` (N, d) in [0, 1].

    Each step takes `batch` random training samples (`mask` (N,): only the True ones; with
    `teaching`, only the worst fraction, reselected every `teaching_every` steps), Adam on
    their mean squared error, the learning rate decayed exponentially by `lr_decay` over the
    budget; with `sape`, the cells of the batch whose error is above the threshold reveal
    more levels. `evaluate` is the PSNR of every sample's prediction against `target` (N, C)
    (default: `values`). `config` is the resolved config (the model's learning rate and
    batch filled in)."""

    def __init__(self, coords: torch.Tensor, values: torch.Tensor, config: INRConfig,
                 finest: int = 256, seed: int = 1337, mask: torch.Tensor | None = None,
                 target: torch.Tensor | None = None,
                 device: str | torch.device = "cpu") -> None:
        if coords.dim() != 2 or values.dim() != 2 or coords.shape[0] != values.shape[0]:
            raise ValueError(f"fit_signal: expected coords (N, d) and values (N, C), got "
                             f"{tuple(coords.shape)} and {tuple(values.shape)}")
        config.check()
        if distributed.active() and config.sape:
            raise ValueError("INRConfig: sape (progressive encoding by local error) is not "
                             "supported under torchrun: each rank sees only its share of the "
                             "errors; run it in one process")
        self.device = torch.device(device)  # the field and the samples; the generator stays
        self.field = CoordinateField(config.model, coords.shape[1], values.shape[1], finest,
                                     seed, config.custom, config.sape or None).to(self.device)
        if self.device.type == "cuda":
            use_cuda_kernels(self.field)
        self.module: nn.Module = self.field
        spec = self.field.spec
        self.coords = coords.float().to(self.device)
        self.values = values.float().to(self.device)
        self.reference = (self.values if target is None
                          else target.float().reshape(values.shape).to(self.device))
        self.train_idx = (torch.arange(coords.shape[0], device=self.device) if mask is None
                          else mask.reshape(-1).to(self.device).nonzero()[:, 0])
        if self.train_idx.numel() == 0:
            raise ValueError("fit_signal: the mask keeps no samples")
        batch = spec.batch if config.batch == 0 else (None if config.batch < 0 else config.batch)
        self.batch = self.train_idx.numel() if batch is None else min(batch, self.train_idx.numel())
        self.base_lr = config.lr or spec.lr
        custom = self.field.custom or {}
        self.config = replace(config, model=self.field.model_name,
                              encoding=custom.get("encoding"), network=custom.get("network"),
                              lr=self.base_lr, batch=-1 if batch is None else batch)
        self.optimizer = torch.optim.Adam(self.field.parameters(), lr=self.base_lr,
                                          betas=(0.9, 0.99), eps=1e-15)
        self.generator = torch.Generator().manual_seed(seed)
        self.pool = self.train_idx
        self.last_loss = math.nan

    def train_step(self, step: int, progress: float) -> dict[str, float]:
        """One Adam step on a batch; returns its loss (MSE) and PSNR."""
        c, net = self.config, self.field
        for group in self.optimizer.param_groups:
            group["lr"] = self.base_lr * (1.0 / c.lr_decay) ** (-progress)
        if c.teaching > 0.0 and step % c.teaching_every == 0:
            self.pool = self.worst_samples()
        pool = self.pool
        idx = pool if self.batch >= pool.numel() else pool[
            torch.randint(0, pool.numel(), (self.batch,), generator=self.generator).to(
                pool.device)]
        idx = distributed.shard(idx)  # this rank's share of the batch (torchrun)
        x = self.coords[idx]
        per_sample = (net(x) - self.values[idx]).square()
        loss = per_sample.mean()
        for prog in net.progress:
            prog.update(x, per_sample.detach().mean(-1), c.sape_threshold, c.sape_rate)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.last_loss = float(loss.detach())
        return {"loss": self.last_loss, "psnr": -10.0 * math.log10(max(self.last_loss, 1e-10))}

    def worst_samples(self, chunk: int = 2**16) -> torch.Tensor:
        """The indices (K,) of the `teaching` fraction of training samples with the largest
        squared error (at least one batch of them)."""
        idx = self.train_idx
        with torch.no_grad():
            err = torch.cat([(self.field(c) - v).square().sum(-1) for c, v in
                             zip(self.coords[idx].split(chunk), self.values[idx].split(chunk),
                                 strict=True)])
        keep = max(self.batch, int(self.config.teaching * idx.numel()))
        return idx[err.topk(min(keep, idx.numel())).indices]

    def predict(self, chunk: int = 2**16) -> torch.Tensor:
        """The field at every sample: (N, C), unclamped."""
        with torch.no_grad():
            return torch.cat([self.field(c) for c in self.coords.split(chunk)])

    def evaluate(self, final: bool) -> dict[str, float]:
        """PSNR of every sample's prediction against the target, and the last step's loss."""
        return {"loss": self.last_loss, "psnr": psnr(self.predict(), self.reference)}

    def state_dict(self) -> dict[str, Any]:
        """The sampling generator and the teaching pool (for `resume`)."""
        return {"generator": self.generator.get_state(), "pool": self.pool.cpu()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores what `state_dict` saved."""
        self.generator.set_state(state["generator"])
        self.pool = state["pool"].to(self.device)


def final_evaluation(task: SignalTask, state: TrainState) -> dict[str, float]:
    """The evaluation after the last step: the last record of ``state.history`` when it is of
    that step, else a new one appended to it."""
    if state.history and state.history[-1]["step"] == state.step:
        return state.history[-1]
    with torch.no_grad():
        scores = task.evaluate(final=True)
    record = {"step": state.step, "seconds": round(state.seconds, 3), **scores}
    state.history.append(record)
    return record


@dataclass
class SignalFit:
    """The result of `fit_signal`: the field, the steps and training seconds it took, the
    final PSNR over every sample, and the evaluations ({"step", "seconds", "loss", "psnr"})."""

    field: CoordinateField
    steps: int
    seconds: float
    psnr: float
    history: list[dict[str, float]] = dataclass_field(default_factory=list)

    def predict(self, coords: torch.Tensor, chunk: int = 2**16) -> torch.Tensor:
        """The field at `coords` (N, d) in [0, 1]: (N, C), on the coordinates' device."""
        device = next(self.field.parameters()).device
        with torch.no_grad():
            return torch.cat([self.field(c.to(device)).to(coords.device)
                              for c in coords.split(chunk)])


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
    device: str | torch.device = "cpu",
) -> SignalFit:
    """Fits `model` (a name of `MODELS`) to samples `values` (N, C) at `coords` (N, d) in
    [0, 1] (`custom`: encoding and network configs instead, see `CoordinateField`; `finest`:
    the signal's finest resolution, which sizes grid encodings) for `seconds` of training
    (evaluation not counted) or `max_steps`: a `SignalTask` run by `fields.train.train`.

    `batch`: samples per step ("default": the model's; None: all of them); `lr`: None for the
    model's; `mask`, `teaching`, `sape`, `sape_threshold`, `sape_rate`: see `INRConfig` and
    `SignalTask`. Every `eval_every` seconds of training, and after the last step, the PSNR of
    the prediction of every sample against `target` (default: `values`) is measured and passed
    to `on_eval` as {"step", "seconds", "loss", "psnr"}. `device`: where the field trains.
    """
    config = INRConfig(
        model="custom" if custom is not None else model,
        encoding=None if custom is None else (
            custom.get("encoding") or default_image_encoding(finest, finest)),
        network=None if custom is None else (custom.get("network") or DEFAULT_IMAGE_NETWORK),
        batch=0 if batch == "default" else (-1 if batch is None else int(batch)),
        lr=lr or 0.0, teaching=teaching, sape=sape or 0, sape_threshold=sape_threshold,
        sape_rate=sape_rate)
    config.check("fit_signal")
    task = SignalTask(coords, values, config, finest, seed, mask, target, device=device)
    state = train(task, TrainConfig(steps=max_steps, max_seconds=seconds, eval_every=eval_every,
                                    checkpoint_every=0.0, seed=seed),
                  on_eval=None if on_eval is None else (lambda _s, rec: on_eval(rec)),
                  show_progress=False)
    had = len(state.history)
    final = final_evaluation(task, state)
    if on_eval is not None and len(state.history) > had:
        on_eval(final)
    return SignalFit(field=task.field, steps=state.step, seconds=state.seconds,
                     psnr=float(final["psnr"]), history=state.history)


# -- checkpoints and continuous rendering --


def inr_checkpoint_extra(fit_field: CoordinateField, signal: Mapping[str, Any]) -> dict[str, Any]:
    """What an INR checkpoint holds besides the weights: its kind, how to rebuild the field,
    and the signal's description `signal` ({"kind": "image" | "audio" | "volume" | "video",
    "shape": [...], "channels": C, ...}); the training loop's checkpoints carry it too."""
    return {"kind": "inr", "inr": fit_field.describe(), "signal": dict(signal)}


def save_inr_checkpoint(path: Any, fit_field: CoordinateField, signal: Mapping[str, Any]) -> None:
    """checkpoint.pt of the field alone (no optimiser state), with `inr_checkpoint_extra`."""
    from fields.checkpoint import save_checkpoint

    save_checkpoint(path, fit_field, extra=inr_checkpoint_extra(fit_field, signal))


def load_inr(path: Any) -> tuple[CoordinateField, dict[str, Any]]:
    """The field of a checkpoint written by `save_inr_checkpoint`, and its signal description."""
    from fields.checkpoint import read_kind_checkpoint

    payload, _ = read_kind_checkpoint(path, "inr", "inr", "an INR")
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
    device = next(model.parameters()).device  # coordinates go to the field, values come back
    with torch.no_grad():
        out = torch.cat([model(c.to(device)).cpu() for c in coords.split(chunk)])
    return out.reshape(*new, -1)

