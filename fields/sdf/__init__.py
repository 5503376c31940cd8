"""Signed distance fields: procedural shapes (`shapes`), the field, its supervision and
training (`field`), sphere tracing (`fields.render.sphere_trace`) and meshes
(`fields.mesh.extract_surface`)."""
