"""The trained object of a PINN: `Field` (embedding -> network(s) -> output transform),
`Windowed` (one field per time window), and `Evaluator` (a field and the problem's residuals
at points)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from fields.pinn.diff import CoordinateScope
from fields.pinn.hard import OutputTransform
from fields.pinn.networks import Embedding
from fields.pinn.problem import Problem

__all__ = ["Evaluator", "Field", "Windowed", "structure"]


class Field(nn.Module):
    """Embedding -> network(s) -> output transform. Multi-stage: ``raw = N_1 + e_2 N_2 + ...``
    with the earlier stages frozen."""

    def __init__(self, embedding: Embedding, network: nn.Module,
                 transform: OutputTransform) -> None:
        super().__init__()
        self.embedding = embedding
        self.networks = nn.ModuleList([network])
        self.register_buffer("scales", torch.ones(1, dtype=embedding.lo.dtype))
        self.transform = transform

    def add_stage(self, network: nn.Module, scale: float) -> None:
        """Freezes the networks so far and adds `network`, its output times `scale`."""
        for p in self.networks.parameters():
            p.requires_grad_(False)
        self.networks.append(network)
        self.scales = torch.cat([self.scales, self.scales.new_tensor([scale])])

    def raw(self, X: torch.Tensor) -> torch.Tensor:
        """The networks' sum (N, n_outputs) at X (N, dim), before the output transform."""
        h = self.embedding(X)
        out = self.networks[0](h)
        for k in range(1, len(self.networks)):
            out = out + self.scales[k] * self.networks[k](h)
        return out

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """The field's outputs (N, n_outputs) at X (N, dim)."""
        return self.transform(X, self.raw(X))


class Evaluator:
    """Evaluates a field and the problem's residuals at points."""

    def __init__(self, problem: Problem, model: Field) -> None:
        self.problem = problem
        self.box = problem.domain
        self.model = model

    def values(self, X: torch.Tensor) -> torch.Tensor:
        """The field's outputs (N, n_outputs) at X (N, dim)."""
        return self.model(X)

    def with_coords(self, X: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Each coordinate as its own (N, 1) leaf that requires grad, and the outputs there."""
        coords = [X[:, i : i + 1].detach().clone().requires_grad_(True)
                  for i in range(X.shape[1])]
        return coords, self.model(torch.cat(coords, 1))

    def pde(self, X: torch.Tensor) -> list[torch.Tensor]:
        """The residual of each equation, (N, 1) each, at X (N, dim), with the graph."""
        coords, U = self.with_coords(X)
        outs = [U[:, j : j + 1] for j in range(U.shape[1])]
        with CoordinateScope(coords):
            r = self.problem.residual(*outs, *coords)
        rs = list(r) if isinstance(r, (tuple, list)) else [r]
        out = []
        for k, e in enumerate(rs):
            if not isinstance(e, torch.Tensor) or e.numel() != X.shape[0]:
                got = tuple(e.shape) if isinstance(e, torch.Tensor) else type(e).__name__
                raise ValueError(f"Problem {self.problem.name!r}: residual equation {k} gave "
                                 f"{got}; expected a tensor of {X.shape[0]} values (N, 1)")
            out.append(e.reshape(-1, 1))
        return out


class Windowed(nn.Module):
    """A solution made of time windows: `fields[k]` holds on ``[edges[k], edges[k+1]]``."""

    def __init__(self, edges: Sequence[float], t_index: int) -> None:
        super().__init__()
        self.fields = nn.ModuleList()
        self.edges = [float(e) for e in edges]
        self.t_index = t_index

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """The outputs (N, n_outputs) at X (N, dim), each point from its window's field."""
        if len(self.fields) == 1:
            return self.fields[0](X)
        inner = torch.as_tensor(self.edges[1 : len(self.fields)], dtype=X.dtype, device=X.device)
        idx = torch.bucketize(X[:, self.t_index].detach().contiguous(), inner, right=True)
        parts, where = [], []
        for k, f in enumerate(self.fields):
            rows = (idx == k).nonzero().squeeze(1)
            if len(rows):
                parts.append(f(X[rows]))
                where.append(rows)
        order = torch.argsort(torch.cat(where))
        out = torch.cat(parts)[order]
        return out


def structure(model: nn.Module) -> dict[str, Any]:
    """How many time windows and stages a trained model has (to rebuild it for loading):
    ``{"windows": n, "stages": [stages of each window]}``."""
    if isinstance(model, Windowed):
        return {"windows": len(model.edges) - 1,
                "stages": [len(f.networks) for f in model.fields]}
    return {"windows": 1, "stages": [len(model.networks)]}
