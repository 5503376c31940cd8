"""Image quality metrics: PSNR and SSIM (Wang et al. 2004), for images in [0, 1]."""

from __future__ import annotations

import torch

from fields.data.images import psnr

__all__ = ["psnr", "ssim"]


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(
    prediction: torch.Tensor,
    target: torch.Tensor,
    window: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> float:
    """Mean structural similarity of two (H, W, C) images in [0, 1].

    The standard definition (Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, data range 1),
    per channel over the 'valid' region (no padding), averaged over pixels and channels: the
    convention of the NeRF papers' evaluation code."""
    if prediction.shape != target.shape or prediction.dim() != 3:
        raise ValueError(
            f"ssim: expected two (H, W, C) images of one shape, got {tuple(prediction.shape)} "
            f"and {tuple(target.shape)}"
        )
    x = prediction.clamp(0, 1).permute(2, 0, 1)[:, None].double()  # (C, 1, H, W)
    y = target.permute(2, 0, 1)[:, None].double()
    g = _gaussian_window(window, sigma)

    def blur(img: torch.Tensor) -> torch.Tensor:
        img = torch.nn.functional.conv2d(img, g.reshape(1, 1, 1, -1))
        return torch.nn.functional.conv2d(img, g.reshape(1, 1, -1, 1))

    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x**2
    syy = blur(y * y) - mu_y**2
    sxy = blur(x * y) - mu_x * mu_y
    c1, c2 = k1**2, k2**2
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2)
    return float((num / den).mean())
