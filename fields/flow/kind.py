"""The scene-flow kind: `fields fit flow`, `fields bench flow`, and eval / view of its
checkpoints (registered in `fields.kinds`)."""

from __future__ import annotations

from typing import Any

from fields.kinds import Kind


def _register(app: Any, fit_app: Any, bench_app: Any) -> None:
    from fields.flow import cli

    cli.register(app, fit_app, bench_app)


def evaluate(checkpoint: str, data: str | None) -> dict[str, Any]:
    """EPE3D, Acc-strict, Acc-relax, outliers and angle error of the checkpoint's flow
    against the ground truth of what it was fitted to (from its run's config.json), or
    against the flow file `data` ((N, 3) .npy)."""
    from fields.flow.cli import evaluate_flow

    return evaluate_flow(checkpoint, data)


def load(checkpoint: str) -> Any:
    """The fitted flow field of the checkpoint (a `FlowField` in eval mode: points (N, 3) to
    flow vectors (N, 3))."""
    from fields.flow.model import load_flow_field

    field, _ = load_flow_field(checkpoint)
    return field.eval()


def view(checkpoint: str) -> Any:
    """`FlowView` of the checkpoint: both clouds, the flowed source and the vectors."""
    from fields.flow.view import FlowView

    return FlowView.from_checkpoint(checkpoint)


KIND = Kind(
    name="flow",
    summary="scene-flow prior: a 3-D motion field between point clouds",
    register_cli=_register,
    evaluate=evaluate,
    view=view,
    load=load,
)
