"""Implicit neural representations: fit a coordinate network to a signal.

For now: images. `fit_image` fits ``NetworkWithInputEncoding(2, C, encoding, network)`` (by
default a 2-D multiresolution hash grid and a small fused MLP, as instant-ngp's gigapixel
image task) to an (H, W, C) image by regressing pixel colours at pixel centres.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from fields.data.images import psnr
from fields.nn.modules import NetworkWithInputEncoding


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


def pixel_centres(height: int, width: int) -> torch.Tensor:
    """(H * W, 2) coordinates (x, y) in [0, 1] of the pixel centres, row-major."""
    ys = (torch.arange(height, dtype=torch.float32) + 0.5) / height
    xs = (torch.arange(width, dtype=torch.float32) + 0.5) / width
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((gx, gy), dim=-1).reshape(-1, 2)


@dataclass
class ImageFit:
    model: NetworkWithInputEncoding
    psnr: float
    steps: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)

    def render(self, height: int, width: int, chunk: int = 2**18) -> torch.Tensor:
        """The fitted image at any resolution, (H, W, C)."""
        coords = pixel_centres(height, width)
        with torch.no_grad():
            out = torch.cat([self.model(c) for c in coords.split(chunk)])
        return out.reshape(height, width, -1).clamp(0.0, 1.0)


def fit_image(
    image: torch.Tensor,
    encoding_config: Mapping[str, Any] | None = None,
    network_config: Mapping[str, Any] | None = None,
    *,
    seconds: float = 60.0,
    max_steps: int = 100_000,
    target_psnr: float | None = None,
    batch: int = 2**16,
    lr: float = 1e-2,
    eval_every: int = 25,
    seed: int = 1337,
    on_eval: Callable[[dict[str, float]], None] | None = None,
) -> ImageFit:
    """Fits a network to `image` (H, W, C) in [0, 1] for up to `seconds` / `max_steps`.

    Each step regresses a random batch of pixels (Adam, betas (0.9, 0.99), eps 1e-15 as
    instant-ngp; the learning rate decays exponentially to lr / 30 over the budget, whichever
    of `seconds` and `max_steps` is nearer to its end); every `eval_every` steps the PSNR over
    all pixels is measured (not counted in the training time) and passed to `on_eval`. Stops
    early when `target_psnr` is reached.
    """
    if image.dim() != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"fit_image: expected an (H, W, 1|3|4) image, got {tuple(image.shape)}")
    height, width, channels = image.shape
    enc_cfg = encoding_config or default_image_encoding(height, width)
    net_cfg = network_config or DEFAULT_IMAGE_NETWORK
    model = NetworkWithInputEncoding(2, channels, enc_cfg, net_cfg, seed=seed)
    coords = pixel_centres(height, width)
    target = image.reshape(-1, channels).float()
    n = coords.shape[0]
    batch = min(batch, n)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.99), eps=1e-15)
    gen = torch.Generator().manual_seed(seed)
    history: list[dict[str, float]] = []
    trained = 0.0
    step = 0
    best = -math.inf

    def evaluate() -> float:
        with torch.no_grad():
            pred = torch.cat([model(c) for c in coords.split(2**18)])
        return psnr(pred, target)

    while step < max_steps and trained < seconds:
        progress = max(trained / seconds, step / max_steps)
        for group in opt.param_groups:
            group["lr"] = lr * 30.0 ** (-progress)
        t0 = time.perf_counter()
        idx = torch.randint(0, n, (batch,), generator=gen)
        loss = (model(coords[idx]) - target[idx]).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        trained += time.perf_counter() - t0
        step += 1
        if step % eval_every == 0 or trained >= seconds or step == max_steps:
            best = evaluate()
            record = {"step": step, "seconds": trained, "loss": loss.item(), "psnr": best}
            history.append(record)
            if on_eval is not None:
                on_eval(record)
            if target_psnr is not None and best >= target_psnr:
                break
    if not history or history[-1]["step"] != step:
        best = evaluate()
    return ImageFit(model=model, psnr=best, steps=step, seconds=trained, history=history)
