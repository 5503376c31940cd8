"""Dynamic radiance fields (multi-view video): K-Planes and deformation models, a
time-aware occupancy grid, and `fields fit dynamic`."""

from fields.dynamic.model import (
    MODELS,
    DynamicConfig,
    DynamicField,
    DynamicSettings,
    DynamicTask,
    LoadedDynamic,
    TimeOccupancy,
    render_camera_at,
    render_rays_at,
)

__all__ = [
    "MODELS",
    "DynamicConfig",
    "DynamicField",
    "DynamicSettings",
    "DynamicTask",
    "LoadedDynamic",
    "TimeOccupancy",
    "render_camera_at",
    "render_rays_at",
]
