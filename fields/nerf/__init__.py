"""Radiance fields (instant-ngp style, the original NeRF, tri-planes and KiloNeRF): `model`
(config, field, rendering, the training task, checkpoints, outputs), `kilo` (KiloNeRF's grid
of tiny networks), `distill` (teacher -> student between architectures), `cli` (`fields fit
nerf`, `fields distill`) and `kind` (its registration: render, export, eval, view)."""

from fields.nerf.kilo import KiloField, KiloSpec
from fields.nerf.model import (
    CONTRACTIONS,
    MODELS,
    LoadedNerf,
    NerfConfig,
    NerfTask,
    RadianceField,
    RenderSettings,
    auto_finest_resolution,
    build_field,
    carve_hidden_space,
    depth_image,
    extract_nerf_mesh,
    kilo_config,
    planes_config,
    render_camera,
    render_path,
    render_rays,
    scene_info,
    trunc_exp,
    vanilla_config,
    views_from_info,
    write_outputs,
)

__all__ = [
    "CONTRACTIONS",
    "MODELS",
    "KiloField",
    "KiloSpec",
    "LoadedNerf",
    "NerfConfig",
    "NerfTask",
    "RadianceField",
    "RenderSettings",
    "auto_finest_resolution",
    "build_field",
    "carve_hidden_space",
    "depth_image",
    "extract_nerf_mesh",
    "kilo_config",
    "planes_config",
    "render_camera",
    "render_path",
    "render_rays",
    "scene_info",
    "trunc_exp",
    "vanilla_config",
    "views_from_info",
    "write_outputs",
]
