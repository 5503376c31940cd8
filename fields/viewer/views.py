"""What the viewer shows: the `FieldView` every kind's view derives from, and meshes.

A `FieldView` turns a browser camera into a picture (`render`) and may also put objects in
the 3-D scene (`setup_scene`: point clouds, vectors). The viewer's server (`server.py`) owns
the render loop, the resolution and the threads; a view only renders what it is asked, as
fast as it can, and stops early when `cancel()` says the camera has moved on.

Each field kind keeps its own view in its package (`fields/<kind>/view.py`: `NerfView`,
`SignalView`, `FlowView`, `SDFView`, `PinnView`) and registers it in its `Kind`; this module
has `MeshView`, a mesh file (ply / obj / stl / glb, e.g. from `fields export mesh`).

`load_view(path)` finds the view through the kind registry, by the checkpoint's ``kind``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from fields.render.cameras import Cameras

Cancel = Callable[[], bool]


class Cancelled(Exception):
    """A render was abandoned because its camera is stale."""


class FieldView:
    """Base class: what a field kind shows. Subclasses set `kind`, `modes` and override
    `render` (or set `renders_image = False` and draw in `setup_scene`)."""

    kind: str = "field"
    modes: tuple[str, ...] = ("rgb",)
    renders_image: bool = True
    chunk: int = 2**14  # rays between two checks of `cancel`
    chunk_seconds: float = 0.03  # the rendering time a chunk should take (`fit_chunk`)

    def __init__(self) -> None:
        self.settings: dict[str, Any] = {}

    def fit_chunk(self, rays_per_second: float) -> None:
        """Sizes `chunk` to about `chunk_seconds` of rendering at the measured speed, within
        [2^14, 2^17] rays: cancelling stays as prompt for every field, and a fast one renders
        in larger calls, each with less of its fixed cost per ray (KiloNeRF's renderer: 8% of
        a frame's time at 2^16 rays a call against 2^14)."""
        self.chunk = int(min(max(float(rays_per_second) * self.chunk_seconds, 2**14), 2**17))

    def describe(self) -> str:
        """One markdown line for the page's panel."""
        return f"**{self.kind}**"

    def initial_camera(self) -> dict[str, Any]:
        """{"position", "look_at", "up"} (and optionally the vertical "fov", radians) of the
        first view in the browser."""
        return {"position": (0.0, 0.0, 3.0), "look_at": (0.0, 0.0, 0.0), "up": (0.0, 1.0, 0.0)}

    def setup_scene(self, server: Any) -> None:
        """Adds the view's 3-D objects to the (viser) scene; none by default."""

    def controls(self) -> list[dict[str, Any]]:
        """Field-specific settings as GUI controls: dicts with "name", "type" ("slider",
        "checkbox", "dropdown"), "value" and the type's bounds ("min", "max", "step" or
        "options"). Their values land in `self.settings[name]`."""
        return []

    def advance(self, seconds: float) -> bool:
        """Animation: moves the view's settings on by `seconds` of wall time (a time slider
        that plays); True when a setting changed (the viewer then shows it and renders
        again). Nothing moves by default."""
        return False

    def render(self, camera: Cameras, mode: str, cancel: Cancel,
               preview: bool = False) -> np.ndarray:
        """(H, W, 3) float32 picture in [0, 1] of camera 0 of `camera`; raises `Cancelled`
        when `cancel()` turns true between chunks. `preview`: a frame shown while the camera
        moves, where speed matters more than fidelity."""
        raise NotImplementedError


# -- pictures of scalar maps --


@functools.lru_cache(maxsize=8)
def block_order(height: int, width: int, block: int = 32) -> torch.Tensor:
    """(height * width,) int64: the row-major pixel indices of an image, block x block tiles
    one after the other (row-major within a tile, tiles row by row). Consecutive rays in this
    order are neighbours on the screen: a renderer that groups a call's samples by where they
    are (KiloNeRF's cells) finds fewer groups, each with more samples."""
    if height < 1 or width < 1 or block < 1:
        raise ValueError(f"block_order: height, width and block must be >= 1, got "
                         f"{height}, {width}, {block}")
    r = torch.arange(height)[:, None] // block
    c = torch.arange(width)[None, :] // block
    tile = (r * ((width + block - 1) // block) + c).reshape(-1)
    return torch.sort(tile, stable=True).indices


def orbit_view_camera(info: dict[str, Any]) -> dict[str, Any]:
    """`FieldView.initial_camera` for a field seen through cameras: from above the orbit's
    height (``info["orbit"]``: centre, radius, up), looking at its centre, with the vertical
    field of view of the data's cameras (``info["camera"]``)."""
    import math

    import torch

    o = info["orbit"]
    centre = torch.tensor(o["centre"], dtype=torch.float32)
    up = torch.tensor(o["up"], dtype=torch.float32)
    up = up / up.norm().clamp_min(1e-9)
    side = torch.linalg.cross(up, torch.tensor([0.0, 0.0, 1.0]))
    if side.norm() < 1e-3:
        side = torch.linalg.cross(up, torch.tensor([1.0, 0.0, 0.0]))
    side = side / side.norm()
    pos = centre + float(o["radius"]) * (0.87 * side + 0.5 * up)
    cam = info["camera"]
    fov = 2.0 * math.atan(0.5 * cam["height"] / cam["fy"])  # the data's cameras'
    return {"position": tuple(pos.tolist()), "look_at": tuple(centre.tolist()),
            "up": tuple(up.tolist()), "fov": fov}


def colormap(values: np.ndarray, lo: float, hi: float, name: str = "turbo") -> np.ndarray:
    """(…, 3) colours of `values` mapped linearly from [lo, hi] (clamped) through a
    matplotlib colormap."""
    import matplotlib

    lut = matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3].astype(np.float32)
    t = np.clip((values - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    return lut[np.round(t * 255).astype(np.int64)]


# -- radiance fields --




# -- INR signals (image, video, volume) --




# -- scene flow --




# -- signed distance fields --




# -- PDE solutions --




# -- meshes --

MESH_SUFFIXES = (".ply", ".obj", ".stl", ".glb", ".gltf", ".off")


class MeshView(FieldView):
    """A triangle mesh (an extracted surface: `fields export mesh`), drawn by the browser
    with its vertex colours when it has them."""

    kind = "mesh"
    modes = ("scene",)
    renders_image = False

    def __init__(self, vertices: np.ndarray, faces: np.ndarray,
                 colors: np.ndarray | None = None, name: str = "") -> None:
        super().__init__()
        self.vertices = np.asarray(vertices, dtype=np.float32)
        self.faces = np.asarray(faces, dtype=np.int64)
        if self.vertices.ndim != 2 or self.vertices.shape[1] != 3 or len(self.vertices) == 0:
            raise ValueError(f"{name}: a mesh needs (V, 3) vertices, got "
                             f"{self.vertices.shape}")
        if self.faces.ndim != 2 or self.faces.shape[1] != 3:
            raise ValueError(f"{name}: a mesh needs (F, 3) triangle faces, got "
                             f"{self.faces.shape}")
        if len(self.faces) and (self.faces.min() < 0 or self.faces.max() >= len(self.vertices)):
            raise ValueError(f"{name}: face indices outside [0, {len(self.vertices)})")
        self.colors = None if colors is None else np.asarray(colors, dtype=np.uint8)[:, :3]
        self.name = name

    @classmethod
    def from_file(cls, path: str) -> MeshView:
        import trimesh

        try:
            mesh = trimesh.load(path, force="mesh", process=False)
        except Exception as e:
            raise ValueError(f"{path}: not a readable mesh ({type(e).__name__}: {e})") from e
        colors = None
        visual = getattr(mesh, "visual", None)
        if visual is not None and getattr(visual, "kind", None) == "vertex":
            colors = np.asarray(visual.vertex_colors)
        return cls(np.asarray(mesh.vertices), np.asarray(mesh.faces), colors, path)

    def describe(self) -> str:
        return (f"**mesh** `{self.name}`: {len(self.vertices)} vertices, {len(self.faces)} "
                f"faces")

    def controls(self) -> list[dict[str, Any]]:
        return [{"name": "wireframe", "type": "checkbox", "value": False}]

    def initial_camera(self) -> dict[str, Any]:
        lo, hi = self.vertices.min(0), self.vertices.max(0)
        centre = (lo + hi) / 2
        r = max(float(np.linalg.norm(hi - lo)) / 2, 1e-3)
        pos = centre + r * np.array([1.6, -1.6, 1.2])
        return {"position": tuple(pos.tolist()), "look_at": tuple(centre.tolist()),
                "up": (0.0, 0.0, 1.0)}

    def setup_scene(self, server: Any) -> None:
        wire = bool(self.settings.get("wireframe", False))
        if self.colors is not None and not wire:
            import trimesh

            mesh = trimesh.Trimesh(self.vertices, self.faces, vertex_colors=self.colors,
                                   process=False)
            server.scene.add_mesh_trimesh("/mesh", mesh)
        else:
            server.scene.add_mesh_simple("/mesh", self.vertices, self.faces,
                                         color=(180, 180, 190), wireframe=wire)


# -- dispatch --



def load_view(path: str) -> FieldView:
    """The view of a checkpoint, chosen by its ``kind`` (or of a mesh file, by its suffix);
    ValueError (naming the file and the field) when it cannot be shown."""
    from pathlib import Path

    from fields.kinds import checkpoint_kind

    if Path(path).suffix.lower() in MESH_SUFFIXES:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such mesh file")
        return MeshView.from_file(path)
    kind = checkpoint_kind(path)
    try:
        return kind.view(path)
    except (KeyError, TypeError, IndexError) as e:
        raise ValueError(f"{path}: malformed {kind.name} checkpoint ({type(e).__name__}: "
                         f"{e})") from e

