"""The physics-informed kind: `fields solve`, and eval / view of its checkpoints (registered
in `fields.kinds`)."""

from __future__ import annotations

from typing import Any

from fields.kinds import Kind


def _register(app: Any, fit_app: Any, bench_app: Any) -> None:
    from fields.pinn import cli

    cli.register(app, fit_app, bench_app)


def evaluate(checkpoint: str, data: str | None) -> dict[str, Any]:
    """Relative L2 error against the problem's reference (per output too), and the
    recovered unknowns of an inverse problem. `data` is not used: the reference comes from
    the problem script."""
    from fields.pinn.run import load_solution

    if data is not None:
        raise ValueError("--data: a PDE solution is measured against its problem's own "
                         "reference; give no --data")
    sol, _ = load_solution(checkpoint)
    if sol.problem.reference is None:
        raise ValueError(f"{checkpoint}: problem {sol.problem.name!r} has no reference "
                         "solution to measure against")
    return {"problem": sol.problem.name, "rel_l2": sol.rel_l2(),
            "rel_l2_per_output": sol.rel_l2_per_output(), "unknowns": sol.unknowns()}


def load(checkpoint: str) -> Any:
    """The PDE solution of the checkpoint (a `fields.pinn.Solution`: call it with named
    coordinates, e.g. ``solution(x=0.5, t=0.25)``)."""
    from fields.pinn.run import load_solution

    solution, _ = load_solution(checkpoint)
    return solution


def view(checkpoint: str) -> Any:
    """`PinnView` of the checkpoint: solution / reference / error maps, or a profile."""
    from fields.pinn.view import PinnView

    return PinnView.from_checkpoint(checkpoint)


KIND = Kind(
    name="pinn",
    summary="physics-informed network: the solution of a PDE",
    register_cli=_register,
    evaluate=evaluate,
    view=view,
    load=load,
)
