"""Data-parallel training under torchrun (`fields.distributed`): 2 CPU ranks with gloo against
one process on the same global batch, resuming across world sizes, and a killed rank that
torchrun restarts from the last checkpoint.

Tolerances: the ranks' gradients are the one-process gradient summed in another order (about
1e-7 relative in float32), and Adam (eps 1e-15) turns a near-zero gradient's sign into a whole
learning-rate step, so hash-grid entries may differ by a fraction of a step after a few
steps; float64 PINNs match to 1e-8."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fields import distributed

ROOT = Path(__file__).resolve().parents[1]


def _env(threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = str(threads)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _fields(args: list[str], ranks: int, timeout: float = 300,
            extra: list[str] | None = None) -> subprocess.CompletedProcess:
    """`fields ARGS` in one process (1 thread), or under torchrun on `ranks` CPU ranks."""
    if ranks == 1:
        cmd = [sys.executable, "-m", "fields", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", str(ranks), *(extra or []), "-m", "fields", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(1),
                         cwd=ROOT)
    assert out.returncode == 0, f"{' '.join(cmd)}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def _close(a: Path, b: Path, atol: dict[str, float], default: float) -> None:
    sa, sb = _state(a), _state(b)
    assert sa.keys() == sb.keys()
    for k, v in sa.items():
        if torch.is_tensor(v) and v.is_floating_point():
            tol = next((t for name, t in atol.items() if name in k), default)
            diff = (v - sb[k]).abs().max().item() if v.numel() else 0.0
            assert diff <= tol, f"{k}: max difference {diff:.3g} > {tol:g}"


def test_helpers_are_the_identity_in_one_process():
    assert not distributed.active() and distributed.rank() == 0
    assert distributed.world_size() == 1 and distributed.is_main()
    x = torch.arange(10)
    assert distributed.shard(x) is x and distributed.shard_bounds(10) == (0, 10)
    assert distributed.all_sum([1.5, 2.0]).tolist() == [1.5, 2.0]
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), 2.0)
    distributed.average_gradients([p])
    assert p.grad.tolist() == [2.0, 2.0, 2.0]


def test_image_fit_on_two_ranks_matches_one_process(tmp_path):
    """The fast smoke test: `torchrun --nproc_per_node 2 -m fields fit image` (gloo) against
    `fields fit image` with the same global batch and seed."""
    args = ["fit", "image", "--steps", "20", "--eval-every", "0"]
    one = _fields([*args, "--output", str(tmp_path / "one")], 1)
    two = _fields([*args, "--output", str(tmp_path / "two")], 2)
    # measured: 1e-4 on the table; on the networks 3e-7 on one machine of this kind and 7.5e-5
    # on another (2026-12-05: the same code, other summation orders and kernels in torch);
    # allowed: a fifth of a learning-rate step (1e-2) on the table, a twentieth on the
    # networks (see the module docstring)
    _close(tmp_path / "one" / "checkpoint.pt", tmp_path / "two" / "checkpoint.pt",
           {"encoding": 2e-3}, 5e-4)
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert m1["steps"] == m2["steps"] == 20
    assert abs(m1["psnr"] - m2["psnr"]) < 0.05
    cfg = json.loads((tmp_path / "two" / "config.json").read_text())
    assert cfg["world_size"] == 2 and "world_size" not in json.loads(
        (tmp_path / "one" / "config.json").read_text())
    # rank 0 alone prints the result
    assert two.stdout.count("Wrote") == 1 and one.stdout.count("Wrote") == 1


def test_a_rank_that_fails_ends_the_run_with_a_clear_error(tmp_path):
    bad = tmp_path / "nope.png"
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "fields", "fit", "image", str(bad), "--steps", "5",
         "--output", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=120, env=_env(1), cwd=ROOT)
    assert out.returncode != 0
    assert "nope.png" in out.stdout + out.stderr


@pytest.mark.slow
def test_solve_on_two_ranks_matches_one_process_adam_and_lbfgs(tmp_path):
    """Adam over sharded collocation points, then L-BFGS replicated on every rank: the loss
    history and the parameters of one process."""
    args = ["solve", "poisson", "--adam-steps", "30", "--lbfgs-steps", "30",
            "--config", '{"eval_every": 5}']
    _fields([*args, "--output", str(tmp_path / "one")], 1)
    _fields([*args, "--output", str(tmp_path / "two")], 2)
    h1 = json.loads((tmp_path / "one" / "history.json").read_text())
    h2 = json.loads((tmp_path / "two" / "history.json").read_text())
    l1 = [h["loss"] for h in h1 if "loss" in h]
    l2 = [h["loss"] for h in h2 if "loss" in h]
    assert len(l1) == len(l2) > 5
    assert {h.get("phase") for h in h1} >= {"Adam", "L-BFGS"}
    for a, b in zip(l1, l2, strict=True):
        assert abs(a - b) <= 1e-7 * abs(a)
    _close(tmp_path / "one" / "checkpoint.pt", tmp_path / "two" / "checkpoint.pt", {}, 1e-7)


NERF_TINY = json.dumps({"target_samples": 2**14, "initial_rays": 1024, "grid_resolution": 32,
                        "render_steps": 128, "occupancy_warmup": 32})


def _kind_args(kind: str, scene: Path) -> list[str]:
    if kind == "nerf":
        return ["fit", "nerf", "--data", str(scene), "--eval-every", "0", "--video-frames",
                "0"]
    return ["fit", "sdf", "--eval-every", "0", "--resolution", "64"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["nerf", "sdf"])
def test_first_step_gradient_is_the_one_process_gradient(tmp_path, tiny_scene_dir, kind):
    """After one step, Adam's first moment is 0.1 x the gradient: the ranks' averaged
    gradient (rays / points split over 2 ranks, hash-table gradients included) is the
    one-process gradient of the same global batch, entry for entry."""
    config = json.loads(NERF_TINY) if kind == "nerf" else {}
    args = [*_kind_args(kind, tiny_scene_dir), "--steps", "1", "--config",
            json.dumps({**config, "lr": 1e-20})]
    _fields([*args, "--output", str(tmp_path / "one")], 1)
    _fields([*args, "--output", str(tmp_path / "two")], 2)
    m1 = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=False)["optimizer"]
    m2 = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=False)["optimizer"]
    for k, st in m1["state"].items():
        a, b = st["exp_avg"], m2["state"][k]["exp_avg"]
        assert torch.equal(a != 0, b != 0), f"parameter {k}: other entries have gradients"
        rel = (a - b).abs().max().item() / max(a.abs().max().item(), 1e-30)
        assert rel < 1e-5, f"parameter {k}: relative difference {rel:.3g}"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["nerf", "sdf"])
def test_fit_on_two_ranks_ends_where_one_process_does(tmp_path, tiny_scene_dir, kind):
    """Over 40 steps, hash-table entries with near-zero gradients take sign-dependent Adam
    steps, so parameters drift apart as they do between 1 and 2 threads in one process; what
    the fit reaches (held-out PSNR, Chamfer distance) stays the same."""
    args = [*_kind_args(kind, tiny_scene_dir), "--steps", "40"]
    if kind == "nerf":
        args += ["--config", NERF_TINY]
    _fields([*args, "--output", str(tmp_path / "one")], 1)
    _fields([*args, "--output", str(tmp_path / "two")], 2)
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert m1["steps"] == m2["steps"] == 40
    if kind == "nerf":
        assert abs(m1["psnr"] - m2["psnr"]) < 0.3, (m1["psnr"], m2["psnr"])
    else:
        assert abs(m1["chamfer_l1"] - m2["chamfer_l1"]) <= 0.1 * m1["chamfer_l1"], (
            m1["chamfer_l1"], m2["chamfer_l1"])


@pytest.mark.slow
@pytest.mark.parametrize("first,second", [(2, 1), (1, 2)])
def test_resume_on_another_world_size(tmp_path, first, second):
    """A checkpoint written by N ranks continues on M: the same batches (every rank draws the
    global batch from the checkpoint's generator), so the result is that of the same two
    runs in one process."""
    args = ["fit", "image", "--eval-every", "0"]
    for name, (a, b) in (("ref", (1, 1)), ("run", (first, second))):
        _fields([*args, "--steps", "10", "--output", str(tmp_path / name)], a)
        _fields([*args, "--steps", "20", "--resume", str(tmp_path / name / "checkpoint.pt")], b)
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["steps"] == 20
    # a fifth of a learning-rate step (1e-2) for the hash table (see the module docstring)
    _close(tmp_path / "ref" / "checkpoint.pt", tmp_path / "run" / "checkpoint.pt",
           {"encoding": 2e-3}, 1e-4)


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc)."""
    kids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            kids.append(int(entry.name))
    return kids


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the ranks through /proc")
def test_killed_rank_is_restarted_from_the_checkpoint(tmp_path):
    """torchrun --max-restarts 1: rank 1 is killed (SIGKILL) after the first checkpoint; every
    rank restarts, resumes from the checkpoint in the run's folder and finishes the budget."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "--max-restarts", "1", "-m", "fields", "fit", "image", "--steps", "100000",
           "--max-seconds", "12", "--eval-every", "0", "--checkpoint-every", "2",
           "--output", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(1), cwd=ROOT)
    try:
        deadline = time.time() + 120
        while not (out / "checkpoint.pt").is_file():
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline, "no checkpoint was written"
            time.sleep(0.2)
        ranks = [p for p in _children(proc.pid)
                 if b"fields" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert len(ranks) == 2, ranks
        step_before = torch.load(out / "checkpoint.pt", weights_only=False)["train_state"]
        os.kill(max(ranks), signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stdout[-2000:] + stderr[-3000:]
    assert "restart 1: resuming from" in stdout + stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["seconds"] >= 12 and m["steps"] > step_before["step"]
