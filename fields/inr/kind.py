"""The implicit-neural-representation kind (images, audio, volumes, videos): `fields fit
image|audio|volume|video`, `fields bench inr`, and render / eval / view of its checkpoints
(registered in `fields.kinds`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fields.kinds import Kind, RenderRequest


def _register(app: Any, fit_app: Any, bench_app: Any) -> None:
    from fields.inr import cli

    cli.register(app, fit_app, bench_app)


def render(request: RenderRequest) -> Path:
    """The signal sampled at `scale` times its resolution (it is continuous): an image
    (.png), audio (.wav), volume (.npy) or video (.mp4), by the signal's kind."""
    from fields.inr.cli import render_inr

    return render_inr(request.checkpoint, request.output, request.scale)


def evaluate(checkpoint: str, data: str | None) -> dict[str, Any]:
    """PSNR (and SSIM for images) of the field against the signal it was fitted to (from its
    run's config.json), or against the file `data`."""
    from fields.inr.cli import evaluate_inr

    return evaluate_inr(checkpoint, data)


def load(checkpoint: str) -> Any:
    """The fitted field of the checkpoint (a `CoordinateField` in eval mode; its signal's
    description is in the checkpoint's ``signal`` field)."""
    from fields.inr.model import load_inr

    field, _ = load_inr(checkpoint)
    return field.eval()


def view(checkpoint: str) -> Any:
    """`SignalView` of the checkpoint."""
    from fields.inr.view import SignalView

    return SignalView.from_checkpoint(checkpoint)


KIND = Kind(
    name="inr",
    summary="implicit neural representation of a signal: image, audio, volume, video",
    register_cli=_register,
    evaluate=evaluate,
    view=view,
    load=load,
    render=render,
)
