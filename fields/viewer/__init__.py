"""The real-time web viewer (server side; the page is viser's web client).

`fields view CHECKPOINT` serves http://127.0.0.1:7007; `fields fit nerf --viewer` shows the
field while it trains. See `server.Viewer` (render loop, adaptive resolution, training
hooks), `views` (the base of every kind's view, meshes, `load_view` through the kind
registry), `camera` (viser's OpenCV camera to the engine's OpenGL one) and `cli`
(`fields view`, `fields bench viewer`).
"""

from fields.viewer.camera import ViewCamera, viser_to_c2w
from fields.viewer.server import Viewer
from fields.viewer.views import FieldView, MeshView, load_view

__all__ = ["FieldView", "MeshView", "ViewCamera", "Viewer", "load_view", "viser_to_c2w"]
