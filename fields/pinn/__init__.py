"""Physics-informed networks: residuals, samplers and PDE problems (built by the PINN issue)."""
