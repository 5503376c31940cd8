"""The kind registry: what each field kind provides, found by the kind's name.

A field kind (radiance field, signed distance field, INR, scene flow, PINN, ...) lives in its
own package `fields/<kind>/` and describes itself in `fields/<kind>/kind.py` as a module-level
``KIND = Kind(...)``. The root commands (`fields render`, `fields export`, `fields eval`,
`fields view`) and the command line's `fit` group find what to call here, by the checkpoint's
``kind`` field, never by branching on a kind's name. Adding a kind is its folder and one line
in `KIND_MODULES`.

The registry imports the kinds lazily, by module name, so that nothing below the kinds
(nn, render, data, train, viewer) imports a kind.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# name -> the module that defines its `KIND`: one line per kind.
KIND_MODULES: dict[str, str] = {
    "nerf": "fields.nerf.kind",
    "sdf": "fields.sdf.kind",
    "inr": "fields.inr.kind",
    "flow": "fields.flow.kind",
    "pinn": "fields.pinn.kind",
    "dynamic": "fields.dynamic.kind",
}


@dataclass(frozen=True)
class RenderRequest:
    """What `fields render` asks of a kind.

    Attributes:
        checkpoint: the checkpoint file.
        output: the output file (its suffix picks the format), or None for the kind's default.
        path: camera path name (orbit, spiral) for kinds seen through a camera.
        frames: frames of a video.
        fps: frames per second of a video.
        scale: resolution relative to the data's.
        camera_path: a nerfstudio camera-path .json (replaces path, frames, fps and scale).
        time_range: (start, end) times in [0, 1] a dynamic field's video runs through (None:
            the kind's default).
        still: a dynamic field's camera stays at the path's first position.
    """

    checkpoint: str
    output: str | None = None
    path: str = "spiral"
    frames: int = 60
    fps: int = 24
    scale: float = 1.0
    camera_path: str | None = None
    time_range: tuple[float, float] | None = None
    still: bool = False


def parse_time_range(text: str | None) -> tuple[float, float] | None:
    """``"START:END"`` (or one number: that instant) as two times in [0, 1]; None for None;
    ValueError saying what was expected otherwise."""
    if text is None:
        return None
    parts = text.split(":")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or not all(0.0 <= v <= 1.0 for v in values):
        raise ValueError(f"got {text!r}; expected START:END with times in [0, 1] (e.g. 0:1, "
                         "0.2:0.6) or one time (0.5: bullet time)")
    return (values[0], values[-1])


@dataclass(frozen=True)
class ExportRequest:
    """What `fields export mesh|pointcloud|cameras` asks of a kind.

    Attributes:
        checkpoint: the checkpoint file.
        output: the file (its suffix picks the format), or None for ``<what>.ply`` beside
            the checkpoint.
        resolution: marching-cubes grid vertices per axis (meshes).
        threshold: density iso-level, for kinds with a density (radiance fields).
        what: "mesh", "pointcloud" or "cameras" (one of the kind's `Kind.exports`).
        normalised: keep the scene's normalised coordinates instead of mapping the result back
            into the capture's own (when the data had a capture transform).
    """

    checkpoint: str
    output: str | None = None
    resolution: int = 256
    threshold: float = 10.0
    what: str = "mesh"
    normalised: bool = False


@dataclass(frozen=True)
class Kind:
    """One field kind's entry points.

    Attributes:
        name: the kind's name, as written in its checkpoints' ``kind`` field.
        summary: one line for `fields --help` and error messages.
        register_cli: adds the kind's commands to the command line:
            ``register_cli(app, fit_app, bench_app)`` (its `fields fit ...` commands, and
            any others, such as `fields solve`).
        evaluate: ``evaluate(checkpoint, data) -> metrics``: held-out metrics of a checkpoint,
            a JSON-able dict (``data`` overrides where the ground truth comes from, when the
            kind reads one; None: the data the checkpoint was fitted to).
        view: ``view(checkpoint) -> fields.viewer.FieldView``: what the viewer shows.
        load: ``load(checkpoint) -> field``: the fitted field, ready to query (a module in
            eval mode, or the kind's own object: `LoadedNerf`, a PINN `Solution`).
        render: ``render(RenderRequest) -> Path`` written, or None when the kind has no
            rendering.
        export: ``export(ExportRequest) -> Path`` written, or None when the kind has nothing
            to export.
        exports: what `export` can write (``ExportRequest.what``).
    """

    name: str
    summary: str
    register_cli: Callable[[Any, Any, Any], None]
    evaluate: Callable[[str, str | None], dict[str, Any]]
    view: Callable[[str], Any]
    load: Callable[[str], Any]
    render: Callable[[RenderRequest], Path] | None = None
    export: Callable[[ExportRequest], Path] | None = None
    exports: tuple[str, ...] = ("mesh",)


def kind_names() -> list[str]:
    """The registered kinds' names, in registration order."""
    return list(KIND_MODULES)


def get_kind(name: str) -> Kind:
    """The registered kind called `name`; ValueError naming the known ones otherwise."""
    if name not in KIND_MODULES:
        raise ValueError(f"unknown field kind {name!r}; known kinds: {', '.join(KIND_MODULES)}")
    module = importlib.import_module(KIND_MODULES[name])
    kind = getattr(module, "KIND", None)
    if not isinstance(kind, Kind) or kind.name != name:
        raise RuntimeError(f"{KIND_MODULES[name]}: expected a module-level KIND = Kind(name="
                           f"{name!r}, ...)")
    return kind


def all_kinds() -> list[Kind]:
    """Every registered kind (imports them all)."""
    return [get_kind(n) for n in KIND_MODULES]


def checkpoint_kind(path: str | Path) -> Kind:
    """The kind that wrote the checkpoint at `path` (its ``kind`` field); ValueError naming
    the file and the field when it is missing or unknown."""
    from fields.checkpoint import read_checkpoint

    name = read_checkpoint(path).get("kind")
    if name not in KIND_MODULES:
        raise ValueError(f"{path}: field 'kind' is {name!r}; expected one of "
                         f"{', '.join(KIND_MODULES)}")
    return get_kind(name)


def load_field(path: str | Path) -> Any:
    """The fitted field of a checkpoint of any kind (see `Kind.load`)."""
    return checkpoint_kind(path).load(str(path))
