"""Signed distance fields: the model, its gradient, supervision samples and the training task.

- `SDFField`: x (N, 3) world -> signed distance (N,). ``model="hash"``: a multiresolution hash
  grid (16 levels x 2 features, finest 1024 cells across the box) + a 2 x 64 ReLU `FusedMLP`
  (instant-nsr-pl style); ``model="siren"``: a 3 x 256 sine `FusedMLP` (omega0 30).
- `sdf_gradient`: the input gradient. ``"autograd"`` differentiates the network (with
  ``create_graph`` its weight-gradient goes through the second derivative: `FusedMLP`'s and the
  grid's CPU kernels give first derivatives only and fall back to their torch references for
  it); ``"finite"`` takes central differences (6 extra evaluations, first derivatives only: the
  numerical gradient Neuralangelo uses for hash grids). ``"auto"``: finite for the hash grid,
  autograd otherwise.
- `SurfaceSamples`: points with known signed distances, near the surface (surface samples
  jittered at two scales) and uniform in the box, drawn once; training draws batches from them.
- `SDFTask`: L1 on the distances + the eikonal term on the uniform points, for
  `fields.train.train`; `PointCloudTask`: an oriented point cloud, no distances (IGR / SIREN
  losses).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from fields import distributed
from fields.config import dataclass_from_dict, require_positive
from fields.nn import FusedMLP
from fields.nn.config import from_config
from fields.nn.encoding_config import encoding_from_config, hash_grid_config

MODELS = ("hash", "siren")


@dataclass
class SDFConfig:
    """The model and its training.

    Attributes:
        model: "hash" or "siren".
        finest_resolution, log2_hashmap_size, n_levels: the hash grid's.
        lr: Adam learning rate (decayed 10x over the last half of the budget).
        batch_near, batch_uniform: samples per step near the surface and uniform in the box.
        eikonal_weight: weight of mean (|grad f| - 1)^2 on the uniform samples.
        gradient: "auto", "autograd" or "finite" (see `sdf_gradient`).
    """

    model: str = "hash"
    finest_resolution: int = 1024
    log2_hashmap_size: int = 19
    n_levels: int = 16
    lr: float = 1e-2
    batch_near: int = 2**14
    batch_uniform: int = 2**12
    eikonal_weight: float = 0.1
    gradient: str = "auto"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SDFConfig:
        cfg = dataclass_from_dict(cls, d)
        require_positive("SDFConfig", cfg, ("lr", "finest_resolution", "log2_hashmap_size",
                                            "n_levels", "batch_near", "batch_uniform"))
        if cfg.model not in MODELS:
            raise ValueError(f"SDFConfig: model {cfg.model!r} not in {MODELS}")
        if cfg.gradient not in ("auto", "autograd", "finite"):
            raise ValueError(f"SDFConfig: gradient {cfg.gradient!r} not in "
                             "('auto', 'autograd', 'finite')")
        return cfg


class SDFField(nn.Module):
    """Signed distance (N,) at world points (N, 3) inside `aabb` (2, 3)."""

    def __init__(self, aabb: torch.Tensor, config: SDFConfig) -> None:
        super().__init__()
        self.register_buffer("aabb", torch.as_tensor(aabb, dtype=torch.float32).reshape(2, 3))
        self.config = config
        extent = float((self.aabb[1] - self.aabb[0]).max())
        if config.model == "hash":
            self.encoding = encoding_from_config(3, hash_grid_config(
                config.finest_resolution, config.log2_hashmap_size, config.n_levels, 2, 16))
            self.network = from_config({"otype": "FullyFusedMLP", "activation": "ReLU",
                                        "output_activation": "None", "n_neurons": 64,
                                        "n_hidden_layers": 2},
                                       self.encoding.n_output_dims, 1)
            # the finest cell, in world units: the finite-difference step
            self.cell = extent / config.finest_resolution
        else:
            self.encoding = None
            self.network = FusedMLP(3, 1, 256, 3, "Sine", bias=True, omega0=30.0)
            self.cell = extent / 512
        # start near the box's inscribed sphere's distance, so the sign is right far away
        self.init_radius = 0.4 * extent

    def unit(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.aabb[0]) / (self.aabb[1] - self.aabb[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.unit(x)
        centre = self.aabb.mean(0)
        prior = (x - centre).norm(dim=-1) - self.init_radius
        if self.encoding is not None:
            h = self.network(self.encoding(u.clamp(0.0, 1.0)))
        else:
            h = self.network(u * 2.0 - 1.0)
        return h[:, 0] + prior


def sdf_gradient(field: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                 method: str = "autograd", eps: float = 1e-3,
                 create_graph: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(values (N,), gradient (N, 3)) of `field` at x (N, 3); see the module docstring."""
    if method == "finite":
        offsets = torch.eye(3, dtype=x.dtype) * eps
        pts = torch.cat([x, (x[:, None] + offsets).reshape(-1, 3),
                         (x[:, None] - offsets).reshape(-1, 3)])
        out = field(pts)
        n = x.shape[0]
        plus, minus = out[n:4 * n].reshape(n, 3), out[4 * n:].reshape(n, 3)
        return out[:n], (plus - minus) / (2 * eps)
    if method != "autograd":
        raise ValueError(f"sdf_gradient: method must be 'autograd' or 'finite', got {method!r}")
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        y = field(xg)
        (g,) = torch.autograd.grad(y.sum(), xg, create_graph=create_graph)
    return y, g


# -- supervision --


@dataclass
class SurfaceSamples:
    """Points with signed distances: `near` (N, 3) / `near_sdf` (N,) around the surface and
    `uniform` (M, 3) / `uniform_sdf` (M,) in the box."""

    near: torch.Tensor
    near_sdf: torch.Tensor
    uniform: torch.Tensor
    uniform_sdf: torch.Tensor

    @classmethod
    def from_function(cls, sdf: Callable[[torch.Tensor], torch.Tensor],
                      surface: torch.Tensor, aabb: torch.Tensor, n_near: int = 2**20,
                      n_uniform: int = 2**19, seed: int = 0) -> SurfaceSamples:
        """Distances by `sdf` (P, 3) -> (P,) at jittered `surface` points (P, 3) and uniform
        points in `aabb`."""
        near, uniform = _sample_points(surface, aabb, n_near, n_uniform, seed)
        with torch.no_grad():
            return cls(near, torch.cat([sdf(p) for p in near.split(2**18)]).float(),
                       uniform, torch.cat([sdf(p) for p in uniform.split(2**18)]).float())


def _sample_points(surface: torch.Tensor, aabb: torch.Tensor, n_near: int, n_uniform: int,
                   seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    aabb = torch.as_tensor(aabb, dtype=torch.float32).reshape(2, 3)
    extent = float((aabb[1] - aabb[0]).max())
    idx = torch.randint(0, surface.shape[0], (n_near,), generator=g)
    # half within 0.2% of the box, half within 2%: sharp near the surface, smooth around it
    sigma = torch.where(torch.arange(n_near) % 2 == 0, 0.002, 0.02) * extent
    near = surface[idx].float() + torch.randn(n_near, 3, generator=g) * sigma[:, None]
    near = torch.minimum(torch.maximum(near, aabb[0]), aabb[1])
    uniform = aabb[0] + torch.rand(n_uniform, 3, generator=g) * (aabb[1] - aabb[0])
    return near, uniform


def mesh_samples(vertices: np.ndarray, faces: np.ndarray, aabb: torch.Tensor,
                 n_near: int = 2**20, n_uniform: int = 2**19, seed: int = 0,
                 source: str = "mesh") -> SurfaceSamples:
    """`SurfaceSamples` of a triangle mesh: signed distances from open3d's RaycastingScene
    (sign by ray parity: meaningful for closed meshes)."""
    from fields.mesh import sample_surface

    o3d = _open3d(source)
    surface, _ = sample_surface(vertices, faces, max(n_near // 4, 1), seed)
    near, uniform = _sample_points(torch.from_numpy(surface).float(), aabb, n_near, n_uniform,
                                   seed)
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.asarray(vertices, dtype=np.float32)),
                        o3d.core.Tensor(np.asarray(faces, dtype=np.uint32)))

    def dist(p: torch.Tensor) -> torch.Tensor:
        d = scene.compute_signed_distance(o3d.core.Tensor(p.numpy())).numpy()
        return torch.from_numpy(np.asarray(d, dtype=np.float32))

    return SurfaceSamples(near, dist(near), uniform, dist(uniform))


def _open3d(source: str) -> Any:
    try:
        import open3d
    except ImportError as e:  # e.g. libusb-1.0 missing
        raise RuntimeError(
            f"{source}: signed distances to a mesh need open3d (`pip install open3d-cpu`; it "
            f"needs the system library libusb-1.0: `apt-get install libusb-1.0-0`): {e}"
        ) from e
    return open3d


# -- training --


class SDFTask:
    """Fits an `SDFField` to `SurfaceSamples` for `fields.train.train`: L1 on the signed
    distances (near and uniform batches) + `eikonal_weight` x mean (|grad| - 1)^2 on the
    uniform batch; Adam, the learning rate decayed 10x over the last half of the budget.
    `evaluate` (optional) scores the surface with `evaluate_fn(field) -> dict`."""

    def __init__(self, samples: SurfaceSamples, aabb: torch.Tensor, config: SDFConfig,
                 seed: int = 0,
                 evaluate_fn: Callable[[SDFField, bool], dict[str, float]] | None = None) -> None:
        self.samples, self.config = samples, config
        self.field = SDFField(aabb, config)
        self.module = self.field
        self.optimizer = torch.optim.Adam(self.field.parameters(), lr=config.lr,
                                          betas=(0.9, 0.99), eps=1e-15)
        self.generator = torch.Generator().manual_seed(seed)
        self.evaluate_fn = evaluate_fn
        method = config.gradient
        if method == "auto":
            method = "finite" if config.model == "hash" else "autograd"
        self.gradient_method = method

    def train_step(self, step: int, progress: float) -> dict[str, float]:
        c, s = self.config, self.samples
        lr = c.lr * (0.1 ** max(0.0, (progress - 0.5) / 0.5))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        i = torch.randint(0, s.near.shape[0], (c.batch_near,), generator=self.generator)
        j = torch.randint(0, s.uniform.shape[0], (c.batch_uniform,), generator=self.generator)
        i, j = distributed.shard(i), distributed.shard(j)  # this rank's share (torchrun)
        pred_near = self.field(s.near[i])
        pred_uni, grad = sdf_gradient(self.field, s.uniform[j], self.gradient_method,
                                      eps=self.field.cell)
        l1 = torch.cat(((pred_near - s.near_sdf[i]).abs(),
                        (pred_uni - s.uniform_sdf[j]).abs())).mean()
        eik = (grad.norm(dim=-1) - 1.0).square().mean()
        loss = l1 + c.eikonal_weight * eik
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item(), "l1": l1.item(), "eikonal": eik.item(), "lr": lr}

    def evaluate(self, final: bool) -> dict[str, float]:
        if self.evaluate_fn is None:
            return {}
        return self.evaluate_fn(self.field, final)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


class PointCloudTask(SDFTask):
    """Fits an `SDFField` to an oriented point cloud, with no distances known (IGR / SIREN):
    |f| at the points, 1 - cos(grad f, normal) at the points, the eikonal term on uniform and
    near-surface points, and SIREN's exp(-alpha |f|) term keeping the zero level set away from
    where there are no points."""

    def __init__(self, points: torch.Tensor, normals: torch.Tensor, aabb: torch.Tensor,
                 config: SDFConfig, seed: int = 0,
                 evaluate_fn: Callable[[SDFField, bool], dict[str, float]] | None = None,
                 normal_weight: float = 0.1, offsurface_weight: float = 0.05) -> None:
        n = normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        empty = torch.zeros(0, 3)
        super().__init__(SurfaceSamples(points.float(), torch.zeros(len(points)), empty,
                                        torch.zeros(0)), aabb, config, seed, evaluate_fn)
        self.normals = n.float()
        self.normal_weight, self.offsurface_weight = normal_weight, offsurface_weight
        self.extent = float((self.field.aabb[1] - self.field.aabb[0]).max())

    def train_step(self, step: int, progress: float) -> dict[str, float]:
        c, pts = self.config, self.samples.near
        lr = c.lr * (0.1 ** max(0.0, (progress - 0.5) / 0.5))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        i = torch.randint(0, pts.shape[0], (c.batch_near,), generator=self.generator)
        aabb = self.field.aabb
        m = c.batch_uniform
        uniform = aabb[0] + torch.rand(m, 3, generator=self.generator) * (aabb[1] - aabb[0])
        j = torch.randint(0, pts.shape[0], (m,), generator=self.generator)
        near = pts[j] + torch.randn(m, 3, generator=self.generator) * 0.02 * self.extent
        i, uniform, near = (distributed.shard(t) for t in (i, uniform, near))
        m = uniform.shape[0]
        on, g_on = sdf_gradient(self.field, pts[i], self.gradient_method, eps=self.field.cell)
        off, g_off = sdf_gradient(self.field, torch.cat((uniform, near)), self.gradient_method,
                                  eps=self.field.cell)
        zero = on.abs().mean()
        normal = (1.0 - torch.nn.functional.cosine_similarity(g_on, self.normals[i],
                                                              dim=-1)).mean()
        eik = (torch.cat((g_on, g_off)).norm(dim=-1) - 1.0).square().mean()
        offsurface = torch.exp(-100.0 * off[:m].abs() / self.extent).mean()
        loss = (zero + self.normal_weight * normal + c.eikonal_weight * eik
                + self.offsurface_weight * offsurface)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item(), "zero": zero.item(), "normal": normal.item(),
                "eikonal": eik.item(), "lr": lr}


def load_sdf(path: Any) -> tuple[nn.Module, dict[str, Any]]:
    """The field of an SDF checkpoint (kind "sdf"; a module mapping points (N, 3) to signed
    distances (N,), with an `aabb`), and the checkpoint's dict."""
    from fields.checkpoint import read_kind_checkpoint

    payload, info = read_kind_checkpoint(path, "sdf", "sdf", "an SDF")
    state = payload["state_dict"]
    try:
        if info.get("neus"):  # a NeuS run: the SDF part of its field
            from fields.sdf.neus import NeusConfig, NeusField

            field: nn.Module = NeusField(torch.tensor(info["aabb"]),
                                         NeusConfig.from_dict(info["config"]))
            state = {k[len("field."):]: v for k, v in state.items() if k.startswith("field.")}
        else:
            field = SDFField(torch.tensor(info["aabb"]), SDFConfig.from_dict(info["config"]))
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path}: field 'sdf' is missing {e}") from e
    try:
        field.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{path}: field 'state_dict' does not match the SDF model: {e}") from e
    field.eval()
    return field, payload
