"""Dataset readers and procedural scenes (built with the field kinds that need them)."""
