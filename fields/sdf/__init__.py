"""Signed distance fields: the field, its supervision and training (`field`), NeuS (`neus`),
runs and their outputs (`run`), `fields fit sdf|neus` (`cli`) and the kind's registration
(`kind`). Procedural shapes are `fields.scenes.shapes`, sphere tracing
`fields.render.sphere_trace`, meshes `fields.mesh.extract_surface`."""
