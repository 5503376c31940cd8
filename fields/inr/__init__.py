"""Implicit neural representations of signals (image, audio, volume, video): `model` (the
models, `INRConfig`, the training task `SignalTask` and `fit_signal`, checkpoints, rendering
at any resolution), `run` (signals, what a fit command does: train, measure, write), `cli`
(`fields fit image|audio|volume|video`, `fields bench inr`, eval and render of checkpoints),
`view` (the viewer's) and `kind` (its registration)."""

from fields.inr.model import (
    DEFAULT_IMAGE_NETWORK,
    MODELS,
    CoordinateField,
    INRConfig,
    INRModel,
    SignalFit,
    SignalTask,
    default_image_encoding,
    fit_image,
    fit_signal,
    get_model,
    inr_checkpoint_extra,
    load_inr,
    render_signal,
    save_inr_checkpoint,
)

__all__ = [
    "DEFAULT_IMAGE_NETWORK",
    "MODELS",
    "CoordinateField",
    "INRConfig",
    "INRModel",
    "SignalFit",
    "SignalTask",
    "default_image_encoding",
    "fit_image",
    "fit_signal",
    "get_model",
    "inr_checkpoint_extra",
    "load_inr",
    "render_signal",
    "save_inr_checkpoint",
]
