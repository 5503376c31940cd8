"""Many fields, one job each (`fields.batch`): the local pool and Ray, the manifest, a broken
item that fails alone, and a rerun that skips what is done."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fields.batch import Job, forwarded_args, optional_value, read_manifest, unique_names

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _fields(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fields", *args], capture_output=True,
                          text=True, timeout=timeout, env=_env(), cwd=ROOT)


def _manifest(folder: Path) -> list[dict]:
    return [json.loads(ln) for ln in (folder / "manifest.jsonl").read_text().splitlines()]


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray((rng.random((24, 32, 3)) * 255).astype(np.uint8)).save(
            folder / f"img{i}.png")
    (folder / "broken.png").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("not an item")
    return folder


def test_image_batch_fails_one_item_alone_and_a_rerun_skips_the_rest(tmp_path, image_folder):
    out = tmp_path / "batch"
    args = ["fit", "image", "--images", str(image_folder), "--steps", "15", "--eval-every",
            "0", "--output", str(out), "--jobs", "2"]
    first = _fields(*args)
    assert first.returncode == 1, first.stdout + first.stderr  # an item failed
    rows = _manifest(out)
    status = {r["item"]: r["status"] for r in rows}
    assert status == {"img0": "done", "img1": "done", "img2": "done", "broken": "failed"}
    broken = next(r for r in rows if r["item"] == "broken")
    assert "broken.png" in broken["error"] and "exit code 2" in broken["error"]
    for r in rows:
        if r["status"] == "done":
            assert r["metrics"]["steps"] == 15 and r["metrics"]["psnr"] > 0
            assert (Path(r["output"]) / "checkpoint.pt").is_file()
            cfg = json.loads((Path(r["output"]) / "config.json").read_text())
            assert cfg["steps"] == 15  # the batch's options reach every job
    assert "3 done, 0 skipped" in first.stdout and "1 failed" in first.stdout
    stamps = {n: (out / n / "metrics.json").stat().st_mtime_ns for n in ("img0", "img1", "img2")}
    second = _fields(*args)
    assert second.returncode == 1
    assert "0 done, 3 skipped (done before), 1 failed" in second.stdout
    assert {n: (out / n / "metrics.json").stat().st_mtime_ns for n in stamps} == stamps
    rows = _manifest(out)
    assert len(rows) == 5 and rows[-1]["item"] == "broken"  # only the failed one again


def test_batch_options_are_checked(tmp_path, image_folder):
    r = _fields("fit", "image", "--images", str(tmp_path / "nope"))
    assert r.returncode == 2 and "no such folder" in r.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    r = _fields("fit", "image", "--images", str(empty))
    assert r.returncode == 2 and "holds no images" in r.stdout
    r = _fields("fit", "image", "--jobs", "2")
    assert r.returncode != 0 and "--jobs and --ray go with --images" in r.stdout
    r = _fields("fit", "sdf", "--meshes", str(image_folder), "--mesh", "x.obj")
    assert r.returncode != 0 and "not with --mesh" in r.stdout


def test_ray_missing_says_how_to_install(tmp_path, image_folder, monkeypatch):
    import builtins

    from fields.batch import ray_module

    real = builtins.__import__

    def no_ray(name, *a, **k):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(RuntimeError, match=r"pip install 'fields\[cluster\]'"):
        ray_module()


def test_manifest_reader_and_names(tmp_path):
    m = tmp_path / "manifest.jsonl"
    m.write_text('{"item": "a", "status": "failed"}\n{"item": "a", "status": "done"}\n'
                 '{"item": "b", "sta')  # a cut line is skipped
    assert read_manifest(m) == {"a": {"item": "a", "status": "done"}}
    assert read_manifest(tmp_path / "none.jsonl") == {}
    names = unique_names([Path("x/a.obj"), Path("x/a.ply"), Path("x/b.obj")])
    assert names == ["a_obj", "a_ply", "b"]
    assert optional_value(["fit", "--ray"], "--ray", "local") == ["fit", "--ray", "local"]
    assert optional_value(["--ray", "--jobs", "2"], "--ray", "local") == [
        "--ray", "local", "--jobs", "2"]
    assert optional_value(["--ray", "host:6379"], "--ray", "local") == ["--ray", "host:6379"]
    assert Job("a", []).output == ""
    assert callable(forwarded_args)


def _shapes(folder: Path) -> None:
    import trimesh

    folder.mkdir()
    shapes = {"sphere": trimesh.creation.icosphere(2, 0.8),
              "box": trimesh.creation.box((1.2, 0.8, 1.0)),
              "cylinder": trimesh.creation.cylinder(0.5, 1.4),
              "capsule": trimesh.creation.capsule(0.8, 0.4),
              "torus": trimesh.creation.torus(0.7, 0.25)}
    for name, mesh in shapes.items():
        mesh.export(folder / f"{name}.ply")
    (folder / "broken.obj").write_text("v 0 0 0\nf 1 2 3\nthis is not a mesh\n")


@pytest.mark.slow
def test_sdf_batch_on_a_local_ray(tmp_path):
    """A local Ray (2 CPUs) fits a folder of 6 shapes, one of them broken: 5 done, 1 failed
    with its error; a rerun fits nothing again."""
    pytest.importorskip("ray")
    meshes, out = tmp_path / "meshes", tmp_path / "batch"
    _shapes(meshes)
    args = ["fit", "sdf", "--meshes", str(meshes), "--steps", "20", "--eval-every", "0",
            "--resolution", "32", "--output", str(out), "--ray", "--jobs", "2"]
    first = _fields(*args, timeout=600)
    assert first.returncode == 1, first.stdout[-3000:] + first.stderr[-3000:]
    assert "on a local Ray" in first.stdout
    rows = _manifest(out)
    assert sorted(r["item"] for r in rows if r["status"] == "done") == [
        "box", "capsule", "cylinder", "sphere", "torus"]
    failed = [r for r in rows if r["status"] == "failed"]
    assert [r["item"] for r in failed] == ["broken"] and "broken.obj" in failed[0]["error"]
    for r in rows:
        if r["status"] == "done":
            assert r["metrics"]["chamfer_l1"] < 0.2
    second = _fields(*args, timeout=600)
    assert "0 done, 5 skipped (done before), 1 failed" in second.stdout, second.stdout[-2000:]
    assert len(_manifest(out)) == 7


def test_solve_sweep_runs_every_combination_once(tmp_path):
    out = tmp_path / "sweep"
    args = ["solve", "poisson", "--sweep", '{"lr": [0.001, 0.003]}', "--adam-steps", "20",
            "--lbfgs-steps", "0", "--output", str(out)]
    first = _fields(*args)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    rows = _manifest(out)
    assert sorted(r["item"] for r in rows) == ["lr=0.001", "lr=0.003"]
    for r in rows:
        cfg = json.loads((Path(r["output"]) / "config.json").read_text())
        assert cfg["config"]["lr"] == float(r["item"].split("=")[1])
        assert cfg["config"]["adam_steps"] == 20 and r["metrics"]["rel_l2"] is not None
    second = _fields(*args)
    assert "0 done, 2 skipped (done before)" in second.stdout
    bad = _fields("solve", "poisson", "--sweep", '{"lr": 0.1}')
    assert bad.returncode == 2 and "lists of values" in bad.stdout
