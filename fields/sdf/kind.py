"""The signed-distance-field kind (NeuS surfaces from images included): `fields fit sdf`,
`fields fit neus`, and render / export / eval / view of its checkpoints (registered in
`fields.kinds`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fields.kinds import ExportRequest, Kind, RenderRequest


def _register(app: Any, fit_app: Any, bench_app: Any) -> None:
    from fields.sdf import cli

    cli.register(app, fit_app, bench_app)


def render(request: RenderRequest) -> Path:
    """A sphere-traced, shaded video along an orbit (or spiral)."""
    from fields.command import console
    from fields.sdf.cli import render_sdf_video

    return render_sdf_video(request.checkpoint, request.output, request.frames, request.fps,
                            max(16, round(256 * request.scale)), console, request.path)


def export(request: ExportRequest) -> Path:
    """The zero level set by marching cubes, in chunks (any resolution); a NeuS fit of a
    capture maps it back into the capture's coordinates (unless `ExportRequest.normalised`)."""
    from fields.command import console
    from fields.sdf.cli import export_sdf_mesh

    return export_sdf_mesh(request.checkpoint, request.resolution, request.output, console,
                           normalised=request.normalised)


def evaluate(checkpoint: str, data: str | None) -> dict[str, Any]:
    """Chamfer-L1, F-score and normal consistency of the zero level set against the true
    surface of what the checkpoint was fitted to (from its run's config.json), or against the
    mesh `data`."""
    from fields.sdf.cli import evaluate_checkpoint

    return evaluate_checkpoint(checkpoint, data)


def load(checkpoint: str) -> Any:
    """The fitted field of the checkpoint (an `SDFField`, or a NeuS field, in eval mode)."""
    from fields.sdf.field import load_sdf

    field, _ = load_sdf(checkpoint)
    return field


def view(checkpoint: str) -> Any:
    """`SDFView` of the checkpoint (sphere traced)."""
    from fields.sdf.view import SDFView

    return SDFView.from_checkpoint(checkpoint)


KIND = Kind(
    name="sdf",
    summary="signed distance field: a surface from a mesh, a point cloud or posed images",
    register_cli=_register,
    evaluate=evaluate,
    view=view,
    load=load,
    render=render,
    export=export,
)
