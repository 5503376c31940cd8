"""How a PINN is trained: `Strategy` gathers the choices a practitioner makes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from fields.pinn.geometry import SAMPLERS

__all__ = ["Strategy"]

WEIGHTINGS = ("fixed", "gradnorm", "ntk")
QUASI_NEWTON = ("lbfgs", "bfgs")
RESAMPLERS = (None, "rad", "rar")
# (collocation points, points per condition) by the domain's dimension (time included)
DEFAULT_POINTS = {1: (128, 64), 2: (4096, 256), 3: (8192, 512)}


@dataclass
class Strategy:
    """Training choices (see `fields.pinn.solve`).

    Optimisation: `adam_steps` of Adam (learning rate `lr`, multiplied by `lr_decay` every 1000
    steps), then `lbfgs_steps` of full-batch L-BFGS (strong Wolfe line search, `history`
    pairs; with `quasi_newton` ``"bfgs"``, dense BFGS instead, `fields.pinn.optim.BFGS`: for
    networks of up to some ten thousand parameters), within `max_seconds` of training in all.
    `total_steps` (None: no cap) caps every optimisation step together (Adam steps and
    L-BFGS iterations, every stage, shared equally among time windows): the phases keep their
    own budgets in order until it is spent (Adam keeps min(adam_steps, total), L-BFGS gets the
    rest), and a total beyond their sum goes to the last L-BFGS phase
    (`fields.pinn.task.plan`). The loss and the relative L2 error are
    recorded every `eval_every` steps of a phase.

    Points: `n_collocation` interior points and `n_condition` per condition (None: sized by
    the domain's dimension, coordinates with time included, `sized`: 128 and 64 in 1-D, 4096
    and 256 in 2-D, 8192 and 512 beyond), drawn by
    `sampler` (sobol / lhs / uniform / grid); `resample`: ``"rad"`` (residual-based adaptive
    distribution, Wu et al. 2023: redraw with probability ``|r|^rad_k / mean + rad_c``) or
    ``"rar"`` (add the `rar_add` worst points of a random pool) every `resample_every` Adam
    steps.

    Weighting: ``"fixed"`` (each condition's own `weight`), ``"gradnorm"`` (learning-rate
    annealing, Wang et al. 2021/2023: ``lambda_k = sum_j |grad L_j| / |grad L_k|``) or
    ``"ntk"`` (Wang, Yu & Perdikaris 2022: ``lambda_k = sum_j tr K_jj / tr K_kk`` with each
    term's neural-tangent-kernel trace per point, estimated from `ntk_probes` random
    projections); either as a moving average (`weight_momentum`), updated every
    `weight_every` Adam steps, frozen for L-BFGS.

    Causal training (Wang, Sankaran & Perdikaris 2022): with `causal` = epsilon > 0 the
    residual is averaged in `causal_chunks` time slices weighted by
    ``exp(-epsilon * sum of the earlier slices' losses)``, so later times are fitted only once
    earlier ones are.

    `hard`: impose Dirichlet / initial / periodic conditions exactly (output transform and
    periodic embedding, `periodic_harmonics` per periodic coordinate). `fourier_features` > 0:
    random Fourier features of scale `fourier_sigma` (a number, or a scale per coordinate
    name, ``{"x": 5, "t": 0}``: a coordinate at 0 is passed on raw beside the features).
    `device`: where the field trains
    (``"cpu"``, ``"cuda"``, ``"cuda:N"``); `dtype`: None (float64 on the CPU, float32 on a GPU,
    where TF32 is turned off while it trains: PINN losses need the full float32 mantissa),
    ``"float64"`` or
    ``"float32"``.

    Multi-stage training (Wang & Lai 2024): `stages` > 1 trains each further stage on the
    residual of the sum so far, scaled by the estimated size of the remaining error, its first
    layer ``sin`` at the residual's dominant frequency; `stage_adam_steps` / `stage_lbfgs_steps`
    each.

    Time marching: `time_windows` > 1 splits the time interval into that many windows, trained
    in order, one network each, each window's initial values taken from the previous window
    (as observations at its start; an initial condition on a time derivative carries the
    previous window's derivative there, so a wave equation marches too); the time budget is
    shared equally among what is left.
    """

    adam_steps: int = 2000
    lbfgs_steps: int = 2000
    lr: float = 1e-3
    lr_decay: float = 0.9
    history: int = 50
    quasi_newton: str = "lbfgs"
    n_collocation: int | None = None
    n_condition: int | None = None
    sampler: str = "sobol"
    resample: str | None = None
    resample_every: int = 500
    resample_pool: int = 4
    rad_k: float = 1.0
    rad_c: float = 1.0
    rar_add: int = 256
    weighting: str = "fixed"
    weight_every: int = 100
    weight_momentum: float = 0.9
    ntk_probes: int = 8
    causal: float = 0.0
    causal_chunks: int = 32
    hard: bool = True
    periodic_harmonics: int = 1
    fourier_features: int = 0
    fourier_sigma: float | dict[str, float] = 1.0
    dtype: str | None = None
    device: str = "cpu"
    stages: int = 1
    stage_adam_steps: int = 1000
    stage_lbfgs_steps: int = 2000
    time_windows: int = 1
    max_seconds: float = 900.0
    total_steps: int | None = None
    eval_every: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> ValueError:
            return ValueError(f"Strategy.{name} = {getattr(self, name)!r}: expected {expected}")

        for name in ("adam_steps", "lbfgs_steps", "stage_adam_steps", "stage_lbfgs_steps"):
            if int(getattr(self, name)) < 0:
                raise bad(name, "an integer >= 0")
        for name in ("n_collocation", "n_condition"):
            if getattr(self, name) is not None and int(getattr(self, name)) < 1:
                raise bad(name, "None (sized by the problem's dimension) or an integer >= 1")
        for name in ("history", "resample_every",
                     "weight_every", "ntk_probes", "causal_chunks", "stages", "time_windows",
                     "eval_every", "resample_pool"):
            if int(getattr(self, name)) < 1:
                raise bad(name, "an integer >= 1")
        if int(self.periodic_harmonics) < 1 or int(self.rar_add) < 1:
            raise bad("periodic_harmonics" if int(self.periodic_harmonics) < 1 else "rar_add",
                      "an integer >= 1")
        if not self.rad_c >= 0 or not self.rad_k >= 0:
            raise bad("rad_c" if not self.rad_c >= 0 else "rad_k", "a number >= 0")
        if not 0 <= self.weight_momentum < 1:
            raise bad("weight_momentum", "a number in [0, 1)")
        if not self.lr > 0:
            raise bad("lr", "a positive number")
        if self.total_steps is not None and int(self.total_steps) < 1:
            raise bad("total_steps", "None or an integer >= 1")
        if not self.max_seconds > 0:
            raise bad("max_seconds", "a positive number of seconds")
        if self.sampler not in SAMPLERS:
            raise bad("sampler", f"one of {', '.join(SAMPLERS)}")
        if self.resample not in RESAMPLERS:
            raise bad("resample", "None, 'rad' or 'rar'")
        if self.quasi_newton not in QUASI_NEWTON:
            raise bad("quasi_newton", "'lbfgs' or 'bfgs'")
        if self.weighting not in WEIGHTINGS:
            raise bad("weighting", f"one of {', '.join(WEIGHTINGS)}")
        sig = self.fourier_sigma
        if isinstance(sig, dict):
            if not sig or not all(isinstance(k, str) and isinstance(v, (int, float))
                                  and v >= 0 for k, v in sig.items()) \
                    or not any(v > 0 for v in sig.values()):
                raise bad("fourier_sigma", "a positive number, or a mapping of coordinate "
                          "names to numbers >= 0 with at least one > 0")
        elif not (isinstance(sig, (int, float)) and sig > 0):
            raise bad("fourier_sigma", "a positive number, or a mapping of coordinate names "
                      "to numbers >= 0 with at least one > 0")
        if self.causal < 0:
            raise bad("causal", "epsilon >= 0 (0: off)")
        if self.dtype not in (None, "float64", "float32"):
            raise bad("dtype", "None (by device), 'float64' or 'float32'")
        import re

        if not isinstance(self.device, str) or not re.fullmatch(r"cpu|cuda(:\d+)?",
                                                                 self.device):
            raise bad("device", "'cpu', 'cuda' or 'cuda:N'")

    def sized(self, dim: int) -> Strategy:
        """This strategy with the point counts left None sized for a `dim`-dimensional
        domain (time included): a 1-D problem needs far fewer points than a 2-D one, and
        more points cost every step; and the dtype resolved for the device."""
        n_col, n_cond = DEFAULT_POINTS[min(max(dim, 1), 3)]
        return replace(self, n_collocation=self.n_collocation or n_col,
                       n_condition=self.n_condition or n_cond, dtype=self.resolved_dtype)

    @property
    def torch_dtype(self) -> torch.dtype:
        """`dtype` as a torch dtype (None: float64 on the CPU, float32 on a GPU)."""
        return torch.float64 if self.resolved_dtype == "float64" else torch.float32

    @property
    def resolved_dtype(self) -> str:
        """`dtype`, or the device's default when None."""
        return self.dtype or ("float64" if self.device == "cpu" else "float32")

    @property
    def torch_device(self) -> torch.device:
        """`device` as a torch device."""
        return torch.device(self.device)

    def to_dict(self) -> dict[str, Any]:
        """Every field, as plain values (JSON-ready)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Strategy:
        """A Strategy from a dict of its fields; ValueError naming unknown fields."""
        from fields.config import dataclass_from_dict

        return dataclass_from_dict(cls, d)

    def describe(self, exact: tuple[int, int] | None = None) -> str:
        """A short summary, e.g. ``Adam 1000, L-BFGS 3000, hard BC, float64``. With `exact`
        = (conditions imposed exactly, conditions): ``hard BC`` only when every condition
        was, ``hard BC 1/2`` when some were, ``soft BC`` when none was."""
        parts = []
        if self.adam_steps:
            parts.append(f"Adam {self.adam_steps}")
        if self.lbfgs_steps:
            qn = "BFGS" if self.quasi_newton == "bfgs" else "L-BFGS"
            parts.append(f"{qn} {self.lbfgs_steps}")
        if self.total_steps is not None:
            parts.append(f"{self.total_steps} steps in all")
        if exact is not None and exact[1] > 0:
            k, n = exact
            parts.append("hard BC" if k == n else (f"hard BC {k}/{n}" if k else "soft BC"))
        elif exact is None and self.hard:
            parts.append("hard BC")
        if self.weighting != "fixed":
            parts.append(self.weighting)
        if self.causal:
            parts.append(f"causal {self.causal:g}")
        if self.resample:
            parts.append(self.resample.upper())
        if self.fourier_features:
            parts.append(f"FF {self.fourier_features}")
        if self.stages > 1:
            parts.append(f"{self.stages} stages")
        if self.time_windows > 1:
            parts.append(f"{self.time_windows} windows")
        parts.append(self.resolved_dtype)
        if self.device != "cpu":
            parts.append(self.device)
        return ", ".join(parts)
