"""Built-in scenes, generators and problems that ship inside the package (so that they work
from an installed wheel, not only from a source checkout):

- `tabletop`: the default posed-image scene (`fields fit nerf`, `fields fit neus`), rendered
  by sphere tracing an exact SDF and written in the Blender format;
- `glossy`: the tabletop with a mirror-like sphere, a glossy capsule and a polished table
  (one reflection bounce), for surfaces from images under reflections
  (`fields fit neus --scene glossy --model ref-neus`); `shiny`: the same objects on the
  tabletop's matte checkerboard table, so that the reflections are the only multi-view
  inconsistency; `chrome`: the shiny scene with a mirror-like box for the sphere (flat mirrors,
  whose reflections a diffuse surface behind them explains exactly);
- `street`: a street scene seen by a simulated lidar, pairs and sequences with exact flow
  (`fields fit flow`);
- `shapes`: signed distance shapes and CSG (`fields fit sdf --shape`);
- `pde`: the PDE problem scripts of `fields solve`, one module per problem, each defining
  ``build() -> fields.pinn.Case``.

The INR test signals (a procedural image, audio, a volume) are made by
`fields.data.images.procedural_image` and `fields.data.signals`.
"""
