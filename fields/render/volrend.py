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

from collections.abc import Callable

import torch

from fields import _ext
from fields.nn.backend import scope


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


def _use_kernels(sigmas: torch.Tensor, rgbs: torch.Tensor, t_starts: torch.Tensor,
                 t_ends: torch.Tensor) -> bool:
    """Whether `composite` runs fields._C's CPU kernel: float32 CPU tensors, no gradient
    wanted for t_starts / t_ends, and not under double backward (create_graph)."""
    return (sigmas.device.type == "cpu" and sigmas.dtype == torch.float32
            and rgbs.dtype == torch.float32 and rgbs.dim() == 2 and rgbs.shape[-1] == 3
            and not (t_starts.requires_grad or t_ends.requires_grad)
            and _ext.available())


class _CompositeCpu(torch.autograd.Function):
    """rgb (without background), opacity, depth, weights of packed samples: fields._C's
    forward and backward (gradients for sigmas and rgbs; once differentiable)."""

    @staticmethod
    def forward(ctx, sigmas, rgbs, t_starts, t_ends, offsets):  # type: ignore[override]
        with scope("kernel:composite forward"):
            rgb, opacity, depth, weights = _ext.extension().composite_forward_cpu(
                sigmas, rgbs, t_starts, t_ends, offsets)
        ctx.save_for_backward(sigmas, rgbs, t_starts, t_ends, offsets, weights, opacity, depth)
        return rgb, opacity, depth, weights

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_rgb, g_opacity, g_depth, g_weights):  # type: ignore[override]
        sigmas, rgbs, t_starts, t_ends, offsets, weights, opacity, depth = ctx.saved_tensors

        def grad(g: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
            return torch.zeros_like(like) if g is None else g.contiguous()

        with scope("kernel:composite backward"):
            d_sigmas, d_rgbs = _ext.extension().composite_backward_cpu(
                grad(g_rgb, opacity.expand(-1, 3)), grad(g_opacity, opacity),
                grad(g_depth, depth), None if g_weights is None else g_weights.contiguous(),
                sigmas, rgbs, t_starts, t_ends, offsets, weights, opacity, depth)
        return d_sigmas, d_rgbs, None, None, None


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
    if _use_kernels(sigmas, rgbs, t_starts, t_ends):
        rgb, opacity, depth, weights = _CompositeCpu.apply(
            sigmas.contiguous(), rgbs.contiguous(), t_starts.contiguous(), t_ends.contiguous(),
            offsets.contiguous())
        if background is not None:
            rgb = rgb + (1.0 - opacity) * background
        return {"rgb": rgb, "opacity": opacity, "depth": depth, "weights": weights}
    return composite_reference(sigmas, rgbs, t_starts, t_ends, ray_indices, offsets, background)


def composite_reference(
    sigmas: torch.Tensor,
    rgbs: torch.Tensor,
    t_starts: torch.Tensor,
    t_ends: torch.Tensor,
    ray_indices: torch.Tensor,
    offsets: torch.Tensor,
    background: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """`composite` in torch ops (other devices and dtypes, gradients of any order; the
    reference of the CPU kernel)."""
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


def ranges(starts: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The concatenated integer ranges [starts[k], starts[k] + lengths[k]) (int64)."""
    total = int(lengths.sum()) if lengths.numel() else 0
    if total == 0:
        return torch.zeros(0, dtype=torch.long, device=starts.device)
    ends = torch.cumsum(lengths, 0)
    shift = torch.repeat_interleave(starts - (ends - lengths), lengths, output_size=total)
    return shift + torch.arange(total, device=starts.device)


def prune_in_rounds(
    density: Callable[[torch.Tensor], torch.Tensor],
    t_starts: torch.Tensor,
    t_ends: torch.Tensor,
    ray_indices: torch.Tensor,
    offsets: torch.Tensor,
    transmittance_threshold: float = 1e-4,
    first: int = 8,
    row: torch.Tensor | None = None,
) -> torch.Tensor:
    """The indices (K,) int64, in packed order, of the samples `prune_samples` keeps, with the
    densities evaluated only where they can matter: `density` gets (P,) int64 indices of
    packed samples and returns their sigmas (P,), in rounds along the rays (their first
    `first` samples, then twice as many each round) for the rays whose transmittance is still
    above the threshold. A ray's later samples are never evaluated once it has terminated,
    and would not have been kept. Every operation is on the picked samples or the live rays,
    never on all the marched samples. The transmittance before a sample is summed per ray
    here and over the packed array by `prune_samples`: the two agree but for float64
    rounding at an exact tie with the threshold (and a NaN density is read as empty here).

    `row` (S,) int64, if given, gets for each evaluated sample its place in the
    concatenation of what `density` was asked for, round after round (others are left as
    they were). On the CPU the rounds' bookkeeping is `fields._C`'s (`_prune_in_rounds_torch`
    is the same in torch ops, for other devices and as the reference).
    """
    if ray_indices.device.type == "cpu" and _ext.available():
        return _prune_in_rounds_cpu(density, t_starts, t_ends, offsets,
                                    transmittance_threshold, first, row)
    return _prune_in_rounds_torch(density, t_starts, t_ends, ray_indices, offsets,
                                  transmittance_threshold, first, row)


def _prune_in_rounds_cpu(
    density: Callable[[torch.Tensor], torch.Tensor], t_starts: torch.Tensor,
    t_ends: torch.Tensor, offsets: torch.Tensor, transmittance_threshold: float, first: int,
    row: torch.Tensor | None,
) -> torch.Tensor:
    ext = _ext.extension()
    n_rays = offsets.numel() - 1
    if n_rays <= 0 or int(offsets[-1]) == 0:
        return torch.zeros(0, dtype=torch.long)
    offsets = offsets.contiguous()
    t_starts, t_ends = t_starts.contiguous(), t_ends.contiguous()
    depth = torch.zeros(n_rays, dtype=torch.float64)
    n_keep = torch.zeros(n_rays, dtype=torch.long)
    rays = torch.nonzero(offsets[1:] > offsets[:-1]).squeeze(1)
    lo, size, base = 0, max(1, int(first)), 0
    while rays.numel() > 0:
        pick, lengths = ext.prune_picks_cpu(offsets, rays, lo, size, row, base)
        sigma = density(pick).reshape(-1).to(torch.float32).contiguous()
        base += pick.numel()
        rays = ext.prune_accumulate_cpu(sigma, t_starts, t_ends, offsets, rays, lengths, lo,
                                        size, depth, n_keep, float(transmittance_threshold))
        lo += size
        size *= 2
    return ranges(offsets[:-1], n_keep)


def _prune_in_rounds_torch(
    density: Callable[[torch.Tensor], torch.Tensor],
    t_starts: torch.Tensor,
    t_ends: torch.Tensor,
    ray_indices: torch.Tensor,
    offsets: torch.Tensor,
    transmittance_threshold: float = 1e-4,
    first: int = 8,
    row: torch.Tensor | None = None,
) -> torch.Tensor:
    """`prune_in_rounds` in torch ops."""
    device = ray_indices.device
    n_rays = offsets.numel() - 1
    if ray_indices.numel() == 0 or n_rays <= 0:
        return torch.zeros(0, dtype=torch.long, device=device)
    counts = offsets[1:] - offsets[:-1]
    depth = torch.zeros(n_rays, dtype=torch.float64, device=device)  # optical depth so far
    n_keep = torch.zeros(n_rays, dtype=torch.long, device=device)
    rays = torch.nonzero(counts > 0).squeeze(1)  # live rays with samples left
    lo, size, base = 0, max(1, int(first)), 0
    while rays.numel() > 0:
        lengths = (counts[rays] - lo).clamp(max=size)
        pick = ranges(offsets[rays] + lo, lengths)
        if row is not None:
            row[pick] = torch.arange(base, base + pick.numel(), device=device)
        base += pick.numel()
        ray_of = torch.repeat_interleave(rays, lengths, output_size=pick.numel())
        sigma = density(pick).reshape(-1).to(torch.float32)
        # NaN reads as empty (as in the occupancy grid's update); an optical depth of 50
        # (transmittance 2e-22) ends any ray, and keeps the running sums of the other rays
        # exact where an infinite density would make them NaN
        delta = t_ends.index_select(0, pick) - t_starts.index_select(0, pick)
        sd = (sigma * delta).nan_to_num(nan=0.0).clamp(max=50.0)
        sd = sd.double()
        inclusive = torch.cumsum(sd, 0)
        ends = torch.cumsum(lengths, 0)
        before_group = torch.cat((inclusive.new_zeros(1), inclusive))[ends - lengths]
        group = torch.repeat_interleave(before_group - depth[rays], lengths,
                                        output_size=pick.numel())
        before = inclusive - sd - group  # optical depth before each picked sample
        kept = torch.exp(-before.to(torch.float32)) > transmittance_threshold
        n_keep.index_add_(0, ray_of, kept.long())  # a prefix of each ray: depth only grows
        depth.index_add_(0, ray_of, sd)
        lo += size
        size *= 2
        alive = (torch.exp(-depth[rays].to(torch.float32)) > transmittance_threshold) & (
            counts[rays] > lo)
        rays = rays[alive]
    return ranges(offsets[:-1], n_keep)
