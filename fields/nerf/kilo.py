"""KiloNeRF (Reiser et al. 2021): the scene box cut into cells^3 cells, each with its own tiny
networks, evaluated by `BatchedMLP` (one fused kernel call for all the cells' rows).

A point's cell is where its box coordinates g in [0, 1]^3 fall on the cells^3 grid; its local
coordinates in that cell (in [0, 1]^3) are frequency-encoded (`frequencies` bands: a cell of a
16^3 grid with 4 bands resolves what a 256^3 grid would). Per cell, as KiloNeRF's tiny MLPs:

    local encoding -> density network (width x depth) -> 1 log-density + `features`
    features + SH(view direction) -> colour network (width x 1) -> RGB (sigmoid)

The rows are sorted by cell once per call and both networks run on the grouped rows (with
gradients: `BatchedMLP`'s kernels; without, for rendering: all of it in one C++ pass,
`kilo_forward_cpu`, that scatters each row's density and colour back in place). Rendering in
eval mode goes further, as KiloNeRF's own renderer does: `render_fused` marches, evaluates and
composites rays in one C++ pass (`kilo_render_cpu`), and marches a ray's later samples only
while it is still seen through (the general renderer marches every ray to its end). Bounded
scenes only (the cells tile the scene box). KiloNeRF's recipe is to distil the tiny networks
from a trained field, then fine-tune them on the images: `fields distill CKPT --into kilo`
(`fields.nerf.distill`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fields import _ext
from fields.nn.activations import trunc_exp
from fields.nn.backend import scope
from fields.nn.batched_mlp import BatchedMLP, group_rows
from fields.nn.encoding import Frequency
from fields.nn.encoding_config import encoding_from_config
from fields.nn.spherical_harmonics import SphericalHarmonics
from fields.render.occupancy import OccupancyGrid, contract


@dataclass(frozen=True)
class KiloSpec:
    """The tiny networks' layout (`NerfConfig.kilo`): `cells` per axis, the density network's
    `width` and `depth`, `frequencies` bands of the local position encoding, `features` passed
    from the density network to the colour network."""

    cells: int = 16
    width: int = 32
    depth: int = 2
    frequencies: int = 4
    features: int = 15

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KiloSpec:
        """The spec with the keys of `d` (the others default); ValueError naming unknown keys
        and values that are not positive integers (width: a multiple of 16)."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"NerfConfig.kilo: unknown keys {unknown}; expected some of "
                             f"{sorted(known)}")
        spec = cls(**d)
        for name in known:
            v = getattr(spec, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"NerfConfig.kilo.{name} must be an integer >= 1, got {v!r}")
        if spec.width % 16:
            raise ValueError(f"NerfConfig.kilo.width must be a multiple of 16 (the fused "
                             f"kernels' tile), got {spec.width}")
        if spec.cells > 64:
            raise ValueError(f"NerfConfig.kilo.cells must be <= 64 (64^3 networks), got "
                             f"{spec.cells}")
        return spec


class KiloField(nn.Module):
    """Density and view-dependent colour from cells^3 tiny networks (see the module's doc).

    The same interface as `RadianceField`: `density`, `density_and_encoding`, `view_features`
    and `forward`.

    Args:
        aabb: (2, 3) scene box, cut into the cells.
        contraction: must be "none" (bounded scenes).
        config: a `NerfConfig` whose `kilo` is the `KiloSpec` as a dict; its
            `direction_encoding` and `density_bias` are used too.
    """

    def __init__(self, aabb: torch.Tensor, contraction: str, config: Any) -> None:
        super().__init__()
        if contraction != "none":
            raise ValueError("kilo: bounded scenes only (the cells tile the scene box); this "
                             f"scene is unbounded (contraction {contraction!r})")
        self.register_buffer("aabb", torch.as_tensor(aabb, dtype=torch.float32).reshape(2, 3))
        self.contraction = contraction
        self.config = config
        self.spec = spec = KiloSpec.from_dict(dict(config.kilo or {}))
        self.n_cells = spec.cells ** 3
        self.position_encoding = Frequency(3, spec.frequencies)
        self.direction_encoding = encoding_from_config(3, config.direction_encoding)
        self.density_network = BatchedMLP(
            self.n_cells, self.position_encoding.n_output_dims, 1 + spec.features, spec.width,
            spec.depth)
        self.color_network = BatchedMLP(
            self.n_cells, self.direction_encoding.n_output_dims + spec.features, 3, spec.width,
            1, output_activation="Sigmoid")
        self._pack: torch.Tensor | None = None
        self._pack_key: tuple | None = None

    def cells_of(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(cell (P,) int64, local coordinates (P, 3) in [0, 1], inside (P,) bool) of world
        points x (P, 3)."""
        if (x.device.type == "cpu" and x.dtype == torch.float32 and _ext.available()
                and not (torch.is_grad_enabled() and x.requires_grad)):
            gc, inside = _ext.extension().contract_points_cpu(x, self.aabb, 0)
        else:
            g = contract(x, self.aabb.reshape(6), "none")
            gc = g.clamp(0.0, 1.0)
            inside = ((g >= 0) & (g <= 1)).all(dim=-1)
        n = self.spec.cells
        s = gc * n
        ijk = s.detach().floor().clamp_(0, n - 1)
        local = s - ijk
        ijk = ijk.long()
        cell = (ijk[:, 0] * n + ijk[:, 1]) * n + ijk[:, 2]
        return cell, local, inside

    def _density_features(self, local: torch.Tensor, cell: torch.Tensor, offsets: torch.Tensor,
                          inside: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.density_network(self.position_encoding(local), cell, offsets)
        sigma = trunc_exp(h[:, 0] + self.config.density_bias) * inside
        return sigma, h[:, 1:]

    def _grouped(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The points sorted by cell: (order, cell, local, inside, offsets), all sorted."""
        with scope("kernel:kilo cells"):
            cell, local, inside = self.cells_of(x)
            order, offsets = group_rows(cell, self.n_cells)
            return (order, cell.index_select(0, order), local.index_select(0, order),
                    inside.index_select(0, order), offsets)

    @staticmethod
    def _unsort(order: torch.Tensor, *values: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for v in values:
            out.append(v.new_empty(v.shape).index_put((order,), v))
        return out

    def _kernel_runs(self, x: torch.Tensor) -> bool:
        """Whether `kilo_forward_cpu` can evaluate the field at x."""
        return (x.device.type == "cpu" and x.dtype == torch.float32 and _ext.available()
                and hasattr(_ext.extension(), "kilo_forward_cpu")
                and self.density_network.backend != "torch"
                and self.density_network.spec.activation == "ReLU")

    def _fused(self, x: torch.Tensor, view: torch.Tensor | None,
               view_index: torch.Tensor | None = None) -> list[torch.Tensor] | None:
        """The field in one C++ pass (`kilo_forward_cpu`: cells, encoding, both networks) when
        nothing needs gradients and the kernels can run it; None otherwise. `view_index`:
        point i's view is `view[view_index[i]]`."""
        if torch.is_grad_enabled() and (
                x.requires_grad or (view is not None and view.requires_grad)
                or any(p.requires_grad for p in self.parameters())):
            return None
        if not self._kernel_runs(x):
            return None
        dn, cn = self.density_network, self.color_network
        with scope("kernel:kilo forward"):
            return _ext.extension().kilo_forward_cpu(
                x, view, self.aabb, self.spec.cells, self.spec.frequencies, list(dn.weights),
                list(dn.biases), list(cn.weights), list(cn.biases), self.spec.width,
                float(self.config.density_bias), None if self.training else self._packed(),
                view_index)

    def _packed(self) -> torch.Tensor:
        """Every cell's networks packed for the kernels (`kilo_pack_cpu`), kept while the
        parameters are unchanged (in eval mode: rendering a fixed field packs once, not once
        per call and cell)."""
        params = [*self.density_network.parameters(), *self.color_network.parameters()]
        key = tuple((p.data_ptr(), p._version) for p in params)
        if self._pack_key != key:
            dn, cn = self.density_network, self.color_network
            self._pack = _ext.extension().kilo_pack_cpu(
                self.spec.cells, self.spec.frequencies, list(dn.weights), list(dn.biases),
                list(cn.weights), list(cn.biases), self.spec.width)
            self._pack_key = key
        return self._pack

    def density(self, x: torch.Tensor) -> torch.Tensor:
        """Density (P,) at world points x (P, 3)."""
        fused = self._fused(x, None)
        if fused is not None:
            return fused[0]
        order, cell, local, inside, offsets = self._grouped(x)
        sigma, _ = self._density_features(local, cell, offsets, inside)
        return self._unsort(order, sigma)[0]

    def density_and_encoding(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        """Density (P,) at world points x (P, 3), and None: there is no shared position
        encoding to hand to `forward`."""
        return self.density(x), None

    round_samples = 8  # samples a ray marches and evaluates per round in `render_fused`

    def render_fused(self, grid: OccupancyGrid, origins: torch.Tensor, directions: torch.Tensor,
                     settings: Any, background: torch.Tensor) -> dict[str, torch.Tensor] | None:
        """`fields.nerf.render_rays`' result in one C++ pass (`kilo_render_cpu`) where it can
        run: in eval mode, without gradients, on the CPU kernels, with constant steps through
        a grid over the scene box; None otherwise. The samples, the rule that drops those
        behind opaque content and the sums are the general renderer's (the same image, to
        float rounding); a ray's next samples are marched only while it is still seen
        through. "n_marched" counts the samples marched, which here are the
        samples evaluated.

        The rays go in rounds of `round_samples` samples each (the general renderer's rounds
        double, as each costs it a pass of tensor operations; here a round costs little, and
        short ones evaluate fewer samples behind the surfaces: on a 512^2 frame of a student
        distilled on the built-in scene, rounds of 8 against doubling rounds cut the samples
        evaluated from 2.13M to 1.69M, and the frame's time by about a tenth)."""
        if (self.training or torch.is_grad_enabled() or not self._kernel_runs(origins)
                or not hasattr(_ext.extension(), "kilo_render_cpu")
                or grid.contraction != "none" or float(settings.cone_angle) != 0.0
                or grid.occupied.device.type != "cpu" or origins.dtype != torch.float32
                or directions.dtype != torch.float32):
            return None
        n = origins.shape[0]
        limits = []
        for v in (settings.near, settings.far):
            t = torch.as_tensor(v, dtype=torch.float32)
            if t.dim() > 1 or (t.dim() == 1 and t.shape[0] != n):
                return None  # the general path says what is wrong
            limits.append(t.expand(n).contiguous())
        bg = background.to(torch.float32).expand(n, 3).contiguous()
        dn, cn = self.density_network, self.color_network
        # the kernel encodes the directions itself where the encoding is plain spherical
        # harmonics (no progressive mask); otherwise they come encoded
        enc = self.direction_encoding
        own = isinstance(enc, SphericalHarmonics) and (
            enc.progress is None or (not callable(enc.progress) and enc.progress >= enc.n_levels))
        view = None if own else self.view_features(directions).contiguous()
        with scope("kernel:kilo render"):
            rgb, opacity, depth, counts = _ext.extension().kilo_render_cpu(
                origins.contiguous(), directions.contiguous(), limits[0], limits[1],
                grid.occupied, grid.aabb, float(settings.step_size), view,
                enc.degree if own else 0, bg, float(settings.transmittance_threshold),
                self.round_samples, self.aabb, self.spec.cells, self.spec.frequencies,
                list(dn.weights), list(dn.biases), list(cn.weights), list(cn.biases),
                self.spec.width, float(self.config.density_bias), self._packed(),
                grid.packed_cpu())
        return {"rgb": rgb, "opacity": opacity, "depth": depth, "n_samples": counts[0],
                "n_marched": counts[1]}

    def colours_while_pruning(self, x: torch.Tensor) -> bool:
        """Whether rendering (`render_rays`, without gradients) should take each sample's
        colour when it takes its density, in one pass, rather than evaluate the samples it
        keeps a second time: in eval mode on the fused CPU kernel, where the colour network
        is a third of the work and a second pass would sort, encode and run the density
        networks again."""
        return not self.training and not torch.is_grad_enabled() and self._kernel_runs(x)

    def sample_colours(self, x: torch.Tensor, view: torch.Tensor, view_index: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Density (P,) and colour (P, 3) at points x (P, 3) seen with `view[view_index]`
        (view: `view_features` of each ray's direction, view_index (P,): each point's ray)."""
        fused = self._fused(x, view, view_index)
        if fused is not None:
            return fused[0], fused[1]
        return self(x, None, view=view.index_select(0, view_index))

    def view_features(self, d: torch.Tensor) -> torch.Tensor:
        """The direction encoding of unit directions d (P, 3), as `forward` computes it."""
        return self.direction_encoding((d + 1.0) * 0.5)

    def forward(self, x: torch.Tensor, d: torch.Tensor | None,
                encoded: torch.Tensor | None = None, view: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Density (P,) and colour (P, 3) at points x (P, 3) seen along unit directions d (or
        with `view` = `view_features(d)` given instead); `encoded` must be None (see
        `density_and_encoding`)."""
        if encoded is not None:
            raise ValueError("KiloField.forward: encoded must be None (density_and_encoding "
                             "hands none back)")
        if view is None:
            if d is None:
                raise ValueError("KiloField.forward: give the directions d or view")
            view = self.view_features(d)
        fused = self._fused(x, view)
        if fused is not None:
            return fused[0], fused[1]
        order, cell, local, inside, offsets = self._grouped(x)
        sigma, feat = self._density_features(local, cell, offsets, inside)
        rgb = self.color_network(torch.cat((view.index_select(0, order), feat), dim=-1), cell,
                                 offsets)
        sigma, rgb = self._unsort(order, sigma, rgb)
        return sigma, rgb
