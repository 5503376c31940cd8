"""`fields bench pinn`: the side-by-side with DeepXDE runs, records error curves and writes
its table (DeepXDE's side only where it is installed)."""

from __future__ import annotations

import json

import pytest

from fields.pinn.bench import _milestones, bench_pinn, deepxde_available


def test_milestones_are_the_first_times_below():
    curve = [(1.0, 0.5), (2.0, 5e-3), (3.0, 2e-3), (4.0, 9e-4), (5.0, 1e-4)]
    assert _milestones(curve) == (2.0, 4.0)
    assert _milestones([(1.0, 0.5)]) == (None, None)


def test_bench_runs_fields_and_writes_its_table(tmp_path):
    from typer.testing import CliRunner

    from fields.cli import app

    r = CliRunner().invoke(app, ["bench", "pinn", "--problem", "poisson_lshape", "--seconds",
                                 "3", "--no-deepxde", "--out", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    row = json.loads(r.stdout.strip().splitlines()[-1])
    assert row["problem"] == "poisson_lshape" and row["library"] == "fields"
    assert 0 < row["rel_l2"] < 1.0 and row["steps"] > 0
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert len(saved["rows"][0]["curve"]) >= 2
    assert (tmp_path / "error_vs_time.png").is_file()
    with pytest.raises(ValueError, match="unknown problem"):
        bench_pinn(["nope"], 1.0, False)


@pytest.mark.skipif(not deepxde_available(), reason="DeepXDE is not installed")
def test_bench_runs_deepxde_on_the_same_problem():
    rows = bench_pinn(["poisson_lshape"], 3.0, True)
    assert [r.library for r in rows] == ["fields", "deepxde"]
    assert rows[1].steps > 0 and rows[1].rel_l2 is not None and len(rows[1].curve) >= 1


@pytest.mark.skipif(not deepxde_available(), reason="DeepXDE is not installed")
def test_deepxde_leaves_torch_defaults_as_they_were():
    import torch

    before = torch.get_default_dtype()
    bench_pinn(["poisson_lshape"], 1.0, True)
    assert torch.get_default_dtype() == before
