"""Cameras, rays, sampling, compositing and sphere tracing (built by the NeRF and SDF issues)."""
