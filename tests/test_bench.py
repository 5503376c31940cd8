import json

import pytest
from typer.testing import CliRunner

from fields import _ext
from fields.bench import bench_mlp, mlp_flops
from fields.cli import app


def test_flops_count():
    # 32 -> 64 x 4 -> 16: 2048 + 3 * 4096 + 1024 multiply-adds per sample
    assert mlp_flops(32, 16, 64, 4, 1, "forward") == 2 * 15360
    assert mlp_flops(32, 16, 64, 4, 10, "train") == 3 * 10 * 2 * 15360


@pytest.mark.skipif(not _ext.available(), reason="fields._C not built")
def test_bench_rows_have_baseline_and_backends():
    rows = bench_mlp(widths=[16], depth=2, batches=[256], min_time=0.01, max_repeats=3)
    by = {(r.backend, r.mode): r for r in rows}
    assert set(by) == {
        ("torch", "forward"),
        ("torch", "train"),
        ("cpu", "forward"),
        ("cpu", "train"),
    }
    assert by[("torch", "forward")].speedup == 1.0
    for r in rows:
        assert r.samples_per_s > 0 and r.baseline == "torch"


def test_cli_bench_json_lines():
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "mlp",
            "--widths",
            "16",
            "--depth",
            "1",
            "--batches",
            "128",
            "--modes",
            "forward",
            "--min-time",
            "0.01",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.strip().splitlines()]
    assert {row["backend"] for row in lines} >= {"torch"}
    assert set(lines[0]) >= {
        "backend",
        "baseline",
        "width",
        "depth",
        "batch",
        "mode",
        "samples_per_s",
        "speedup",
    }


def test_cli_rejects_bad_mode():
    result = CliRunner().invoke(app, ["bench", "mlp", "--modes", "backward"])
    assert result.exit_code != 0
    assert "forward" in result.output


@pytest.mark.skipif(not _ext.available(), reason="fields._C not built")
def test_bench_encoding_rows():
    from fields.bench import bench_encoding

    rows = bench_encoding(
        batches=[512], n_levels=4, log2_hashmap_size=10, min_time=0.01, max_repeats=3
    )
    by = {(r.backend, r.mode): r for r in rows}
    assert set(by) == {
        ("torch", "forward"),
        ("torch", "forward+backward"),
        ("cpu", "forward"),
        ("cpu", "forward+backward"),
    }
    assert by[("torch", "forward")].speedup == 1.0
    assert all(r.baseline == "torch" and r.samples_per_s > 0 for r in rows)


def test_cli_bench_encoding_json_and_errors():
    args = ["bench", "encoding", "--batches", "256", "--levels", "2", "--log2-hashmap-size", "8"]
    result = CliRunner().invoke(app, [*args, "--min-time", "0.01", "--json", "--input-grad"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.strip().splitlines()]
    assert {row["mode"] for row in lines} == {"forward", "forward+backward (+dx)"}
    assert {"encoding", "n_levels", "speedup", "baseline"} <= set(lines[0])
    bad = CliRunner().invoke(app, [*args, "--features", "3"])
    assert bad.exit_code == 2 and "n_features_per_level" in bad.output
    bad_mode = CliRunner().invoke(app, [*args, "--modes", "train"])
    assert bad_mode.exit_code != 0 and "forward+backward" in bad_mode.output


def test_bench_march_rows_agree():
    from fields.bench import bench_march

    rows = bench_march(ray_counts=[256], resolution=16, min_time=0.01, max_repeats=3)
    by = {r.backend: r for r in rows}
    assert set(by) == {"torch", "cpu"}
    assert by["torch"].samples == by["cpu"].samples > 0  # same samples from both marchers
    assert by["torch"].speedup == 1.0 and by["cpu"].speedup > 0


@pytest.mark.skipif(not _ext.available(), reason="fields._C not built")
def test_cli_bench_tiny_mlp_rows():
    result = CliRunner().invoke(
        app, ["bench", "tiny-mlp", "--nets", "8", "--width", "16", "--depth", "1",
              "--batch", "300", "--n-in", "5", "--min-time", "0.01", "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.strip().splitlines()]
    assert {(r["method"], r["mode"]) for r in rows} == {
        (m, mode) for m in ("batched", "reference", "loop") for mode in ("forward", "train")}
    for r in rows:
        assert r["nets"] == 8 and r["batch"] == 300 and r["ms"] > 0
        assert r["speedup"] == 1.0 if r["method"] == "batched" else r["speedup"] > 0
