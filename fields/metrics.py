"""Quality metrics: PSNR and SSIM (Wang et al. 2004) for images in [0, 1]; scene-flow errors."""

from __future__ import annotations

import torch

from fields.data.images import psnr

__all__ = ["psnr", "scene_flow_metrics", "ssim"]


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
) -> float | None:
    """Mean structural similarity of two (H, W, C) images in [0, 1]; None when the images are
    smaller than the window (`ssim_note` says so).

    The standard definition (Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, data range 1),
    per channel over the 'valid' region (no padding), averaged over pixels and channels: the
    convention of the NeRF papers' evaluation code."""
    if prediction.shape != target.shape or prediction.dim() != 3:
        raise ValueError(
            f"ssim: expected two (H, W, C) images of one shape, got {tuple(prediction.shape)} "
            f"and {tuple(target.shape)}"
        )
    if ssim_note(prediction.shape[0], prediction.shape[1], window) is not None:
        return None
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


def ssim_note(height: int, width: int, window: int = 11) -> str | None:
    """Why SSIM is not measured on (height, width) images (smaller than its window), or
    None."""
    if min(height, width) < window:
        return (f"SSIM not measured: the images are {width} x {height} px, smaller than its "
                f"{window} px window")
    return None


def mean_or_none(values: list[float | None]) -> float | None:
    """The mean of `values`, or None when any is None (a metric that was not measured)."""
    if not values or any(v is None for v in values):
        return None
    return sum(v for v in values if v is not None) / len(values)


def scene_flow_metrics(pred: torch.Tensor, gt: torch.Tensor) -> dict[str, float]:
    """Scene-flow errors of (N, 3) predicted flows against ground truth (metres), as in the
    scene-flow literature (FlowNet3D, HPLFlowNet, NSFP):

    - ``epe3d``: mean end-point error |pred - gt|;
    - ``acc_strict``: fraction with error < 0.05 m or relative error < 5%;
    - ``acc_relax``: fraction with error < 0.1 m or relative error < 10%;
    - ``outliers``: fraction with error > 0.3 m or relative error > 10%;
    - ``angle_error``: mean angle (radians) between the space-time vectors (pred, 1) and
      (gt, 1), Barron et al.'s optical-flow angular error in 3-D: defined for zero flows too.

    The relative error is |pred - gt| / |gt| (|gt| clamped below at 1e-4 m).
    """
    if pred.shape != gt.shape or pred.dim() != 2 or pred.shape[-1] != 3:
        raise ValueError(
            f"scene_flow_metrics: expected two (N, 3) flows of the same shape, got "
            f"{tuple(pred.shape)} and {tuple(gt.shape)}"
        )
    if pred.shape[0] == 0:
        raise ValueError("scene_flow_metrics: no points")
    pred, gt = pred.double(), gt.double()
    err = (pred - gt).norm(dim=-1)
    rel = err / gt.norm(dim=-1).clamp_min(1e-4)
    ones = torch.ones_like(err)[:, None]
    a, b = torch.cat((pred, ones), -1), torch.cat((gt, ones), -1)
    cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))
    return {
        "epe3d": float(err.mean()),
        "acc_strict": float(((err < 0.05) | (rel < 0.05)).double().mean()),
        "acc_relax": float(((err < 0.1) | (rel < 0.1)).double().mean()),
        "outliers": float(((err > 0.3) | (rel > 0.1)).double().mean()),
        "angle_error": float(torch.acos(cos.clamp(-1.0, 1.0)).mean()),
    }
