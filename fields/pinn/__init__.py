"""Physics-informed neural networks: write the PDE, the library does the rest.

```python
import torch
import fields.pinn as pinn

def residual(u, x, t):
    u_t, u_x = pinn.grad(u, t), pinn.grad(u, x)
    return u_t + u * u_x - (0.01 / torch.pi) * pinn.grad(u_x, x)

problem = pinn.Problem(domain=pinn.Box(x=(-1, 1), t=(0, 1)), residual=residual,
                       conditions=[pinn.Initial(lambda x: -torch.sin(torch.pi * x)),
                                   pinn.Dirichlet(0.0, on="x")])
solution = pinn.solve(problem, network=pinn.MLP(width=32, depth=6),
                      strategy=pinn.Strategy(adam_steps=1000, lbfgs_steps=5000))
u = solution(x=0.5, t=0.25)
```

Modules: `diff` (grad, laplacian), `geometry` (Box, samplers), `shapes` (Interval, Rectangle,
Disk, Ellipse, Polygon, Sphere, Cuboid, constructive geometry ``a | b``, ``a - b``, ``a & b``,
`Domain` = geometry x time), `conditions` (Dirichlet, Neumann, Robin, OperatorBC, Initial,
Periodic, Data, PointSet), `problem`
(Problem, Unknown, Reference), `networks` (MLP, modified MLP, wavelet, Gaussians, embeddings),
`hard` (exact constraints), `strategy`, `field` (Field, Windowed), `terms` (the loss, adaptive
weights, resampling, stages), `task` (one training run on `fields.train.train`), `solve`,
`reference` (the reference solvers), `run` (the built-in problems of `fields/scenes/pde`:
`fields solve`), `cli`, `kind`, `view`.
"""

from fields.pinn.conditions import (
    Condition,
    Data,
    Dirichlet,
    Initial,
    Neumann,
    OperatorBC,
    Periodic,
    PointSet,
    Robin,
)
from fields.pinn.diff import divergence, grad, jacobian, laplacian
from fields.pinn.geometry import Box
from fields.pinn.networks import MLP, Embedding, Gaussians, Wavelet
from fields.pinn.problem import Problem, Reference, Unknown
from fields.pinn.shapes import (
    Cuboid,
    Difference,
    Disk,
    Domain,
    Ellipse,
    Geometry,
    Intersection,
    Interval,
    Polygon,
    Rectangle,
    Sphere,
    Union,
)
from fields.pinn.solve import Field, Solution, solve
from fields.pinn.strategy import Strategy

__all__ = [
    "MLP",
    "Box",
    "Condition",
    "Cuboid",
    "Data",
    "Difference",
    "Dirichlet",
    "Disk",
    "Domain",
    "Ellipse",
    "Embedding",
    "Field",
    "Gaussians",
    "Geometry",
    "Initial",
    "Intersection",
    "Interval",
    "Neumann",
    "OperatorBC",
    "Periodic",
    "PointSet",
    "Polygon",
    "Problem",
    "Rectangle",
    "Reference",
    "Robin",
    "Solution",
    "Sphere",
    "Strategy",
    "Union",
    "Unknown",
    "Wavelet",
    "divergence",
    "grad",
    "jacobian",
    "laplacian",
    "solve",
]

from fields.pinn.run import Case, main, run_case

__all__ += ["Case", "main", "run_case"]
