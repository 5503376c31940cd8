"""Volume rendering on packed samples: transmittance, weights, compositing.

Packed layout: the samples of all rays are concatenated, ray by ray, in increasing t.
``ray_indices`` (S,) names each sample's ray and ``offsets`` (R + 1,) is its CSR index:
ray r owns samples ``offsets[r]:offsets[r + 1]``. Sample i covers ``[t_starts[i], t_ends[i]]``
with density ``sigmas[i]`` and colour ``rgbs[i]``; then, as in Max (1995) and NeRF,

    delta_i = t_ends_i - t_starts_i
    alpha_i = 1 - exp(-sigma_i delta_i)
    T_i     = exp(-sum_{j < i, same ray} sigma_j delta_j)     (transmittance before i)
    w_i     = T_i alpha_i
    C       = sum_i w_i c_i + (1 - sum_i w_i) background
"""

from __future__ import annotations

import torch


def offsets_from_indices(ray_indices: torch.Tensor, n_rays: int) -> torch.Tensor:
    """CSR offsets (R + 1,) int64 of sorted ray indices (S,)."""
    counts = torch.bincount(ray_indices, minlength=n_rays)
    offsets = torch.zeros(n_rays + 1, dtype=torch.long, device=ray_indices.device)
    torch.cumsum(counts, 0, out=offsets[1:])
    return offsets


def exclusive_cumsum_packed(
    values: torch.Tensor, ray_indices: torch.Tensor, offsets: torch.Tensor
) -> torch.Tensor:
    """Per-ray exclusive prefix sums of packed values (S,): out_i = sum of values_j for the
    samples j before i on the same ray. Accumulated in float64 over the whole packed array
    (one cumsum, differentiable), then returned in the input dtype."""
    if values.numel() == 0:
        return values
    inclusive = torch.cumsum(values.double(), 0)
    before = torch.cat((inclusive.new_zeros(1), inclusive))[offsets[:-1]]  # (R,)
    return (inclusive - values.double() - before[ray_indices]).to(values.dtype)


def render_transmittance(
    sigmas: torch.Tensor,
    t_starts: torch.Tensor,
    t_ends: torch.Tensor,
    ray_indices: torch.Tensor,
    offsets: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Transmittance T (S,) before each sample and opacity alpha (S,) of each sample."""
    sigma_delta = sigmas * (t_ends - t_starts)
    trans = torch.exp(-exclusive_cumsum_packed(sigma_delta, ray_indices, offsets))
    alphas = 1.0 - torch.exp(-sigma_delta)
    return trans, alphas


def render_weights(
    sigmas: torch.Tensor,
    t_starts: torch.Tensor,
    t_ends: torch.Tensor,
    ray_indices: torch.Tensor,
    offsets: torch.Tensor,
) -> torch.Tensor:
    """Compositing weights w (S,) = T alpha."""
    trans, alphas = render_transmittance(sigmas, t_starts, t_ends, ray_indices, offsets)
    return trans * alphas


def accumulate_along_rays(
    weights: torch.Tensor, values: torch.Tensor | None, ray_indices: torch.Tensor, n_rays: int
) -> torch.Tensor:
    """Sum over each ray's samples of w_i * v_i: (R, C) for values (S, C), or (R, 1) of the
    weights alone when values is None."""
    v = weights[:, None] if values is None else weights[:, None] * values
    out = v.new_zeros(n_rays, v.shape[-1])
    return out.index_add(0, ray_indices, v)


def composite(
    sigmas: torch.Tensor,
    rgbs: torch.Tensor,
    t_starts: torch.Tensor,
    t_ends: torch.Tensor,
    ray_indices: torch.Tensor,
    offsets: torch.Tensor,
    background: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Composites packed samples into per-ray colour, opacity and expected depth.

    Args:
        sigmas: (S,) densities (>= 0).
        rgbs: (S, 3) colours.
        t_starts, t_ends: (S,) sample intervals along the ray.
        ray_indices: (S,) int64 ray of each sample (sorted).
        offsets: (R + 1,) int64 CSR offsets.
        background: (3,) or (R, 3) colour behind the scene; None for black.
    Returns:
        {"rgb": (R, 3), "opacity": (R, 1), "depth": (R, 1) expected depth of the visible
        content (sum w t_mid / opacity; 0 where nothing is hit), "weights": (S,)}.
    """
    n_rays = offsets.shape[0] - 1
    weights = render_weights(sigmas, t_starts, t_ends, ray_indices, offsets)
    rgb = accumulate_along_rays(weights, rgbs, ray_indices, n_rays)
    opacity = accumulate_along_rays(weights, None, ray_indices, n_rays)
    t_mid = (0.5 * (t_starts + t_ends))[:, None]
    depth = accumulate_along_rays(weights, t_mid, ray_indices, n_rays)
    depth = depth / opacity.clamp_min(1e-10)
    if background is not None:
        rgb = rgb + (1.0 - opacity) * background
    return {"rgb": rgb, "opacity": opacity, "depth": depth, "weights": weights}


def prune_samples(
    sigmas: torch.Tensor,
    t_starts: torch.Tensor,
    t_ends: torch.Tensor,
    ray_indices: torch.Tensor,
    offsets: torch.Tensor,
    alpha_threshold: float = 0.0,
    transmittance_threshold: float = 1e-4,
) -> torch.Tensor:
    """Boolean mask (S,) of the samples worth evaluating with gradients: alpha above
    `alpha_threshold` and transmittance before the sample above `transmittance_threshold`
    (early ray termination). `sigmas` come from a cheap no-grad evaluation."""
    trans, alphas = render_transmittance(sigmas, t_starts, t_ends, ray_indices, offsets)
    keep = trans > transmittance_threshold
    if alpha_threshold > 0:
        keep &= alphas > alpha_threshold
    return keep
