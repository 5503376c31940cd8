"""The built-in PDE problems of `fields solve NAME` (NAME is the module's name).

Each module is a short script defining ``build() -> fields.pinn.Case``: the problem (residual,
domain, conditions, reference solution), the network, the training strategy and the relative
L2 error it should reach. `fields.pinn.run.load_case` runs them; ``python -m
fields.scenes.pde.NAME [OUTPUT]`` solves one on its own. This package imports none of them.
"""
