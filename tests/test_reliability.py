"""Runs that never lie and never lose work: the divergence guard, SIGTERM and kill -9,
early checkpoints, stale temporary files, checks before training, write errors, run folders
that are never overwritten, plain-text errors (issue 21)."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from fields.checkpoint import read_checkpoint
from fields.cli import app
from fields.io import WriteError, atomic_write, clean_stale_temporaries, preflight
from fields.train import Diverged, TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]


class LineTask:
    """Fits y = 3x - 1 by SGD (stable for lr < 1: the loss's largest curvature is 2)."""

    def __init__(self, lr: float = 0.1, spike_at: int | None = None,
                 poison_at: int | None = None) -> None:
        torch.manual_seed(0)
        self.module = nn.Sequential(nn.Linear(1, 1))
        self.module.register_buffer("unused", torch.zeros(3))
        self.optimizer = torch.optim.SGD(self.module.parameters(), lr=lr)
        self.x = torch.linspace(-1, 1, 64)[:, None]
        self.y = 3 * self.x - 1
        self.spike_at, self.poison_at = spike_at, poison_at
        self.steps_run = 0
        self.lrs: list[float] = []

    def train_step(self, step: int, progress: float) -> dict[str, float]:
        self.steps_run += 1
        loss = (self.module(self.x) - self.y).square().mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.lrs.append(self.optimizer.param_groups[0]["lr"])
        self.optimizer.step()
        value = loss.item()
        if step == self.spike_at:
            value = value * 1e9 + 1e3  # a loss far above its running level
            self.spike_at = None
        if step == self.poison_at:  # a parameter the loss does not see goes NaN
            self.module.unused.fill_(float("nan"))
            self.poison_at = None
        return {"loss": value}

    def evaluate(self, final: bool) -> dict[str, float]:
        return {"mse": (self.module(self.x) - self.y).square().mean().item()}


def quiet(**kw):
    return dict(show_progress=False, log=None, **kw)


# -- the divergence guard --


def test_divergence_rolls_back_and_lowers_the_learning_rate(tmp_path):
    # lr 3 and 1.5 diverge, 0.75 converges
    task = LineTask(lr=3.0)
    cfg = TrainConfig(steps=300, max_seconds=60, eval_every=0, checkpoint_every=0,
                      snapshot_every=0.0)
    state = train(task, cfg, checkpoint=tmp_path / "c.pt", **quiet())
    assert [r["lr_scale"] for r in state.rollbacks] == [0.5, 0.25]
    assert state.lr_scale == 0.25 and state.step == 300
    assert "loss became" in state.rollbacks[0]["reason"] or "jumped" in state.rollbacks[0][
        "reason"]
    assert task.evaluate(True)["mse"] < 1e-6
    # the task's own learning rate is untouched; its steps ran at 3 x 0.25
    assert task.optimizer.param_groups[0]["lr"] == 3.0
    payload = read_checkpoint(tmp_path / "c.pt")
    assert payload["train_state"]["lr_scale"] == 0.25
    assert len(payload["train_state"]["rollbacks"]) == 2


def test_divergence_gives_up_after_the_retries_keeping_a_finite_checkpoint(tmp_path):
    task = LineTask(lr=1e6)
    cfg = TrainConfig(steps=300, max_seconds=60, eval_every=0, checkpoint_every=0,
                      max_retries=3)
    with pytest.raises(Diverged, match=r"after 3 roll-back\(s\).*c\.pt.*Lower the learning"):
        train(task, cfg, checkpoint=tmp_path / "c.pt", **quiet())
    payload = read_checkpoint(tmp_path / "c.pt")
    assert all(torch.isfinite(t).all() for t in payload["state_dict"].values())
    assert payload["train_state"]["step"] == 0  # the last good state: the start


def test_a_loss_spike_far_above_its_level_is_divergence():
    task = LineTask(lr=0.1, spike_at=60)
    state = train(task, TrainConfig(steps=100, max_seconds=60, eval_every=0,
                                    checkpoint_every=0, snapshot_every=0.0), **quiet())
    assert len(state.rollbacks) == 1 and "jumped" in state.rollbacks[0]["reason"]
    assert state.rollbacks[0]["back_to_step"] == 60
    assert state.step == 100


def test_a_non_finite_parameter_is_never_checkpointed(tmp_path):
    task = LineTask(lr=0.1, poison_at=30)
    state = train(task, TrainConfig(steps=50, max_seconds=60, eval_every=0,
                                    checkpoint_every=0, snapshot_every=0.0),
                  checkpoint=tmp_path / "c.pt", **quiet())
    assert len(state.rollbacks) == 1 and "'0.unused'" not in state.rollbacks[0]["reason"]
    assert "unused" in state.rollbacks[0]["reason"]
    payload = read_checkpoint(tmp_path / "c.pt")
    assert torch.isfinite(payload["state_dict"]["unused"]).all()


def test_the_guard_forgets_the_level_when_the_objective_changes():
    class Staged(LineTask):
        objective_version = 0

        def train_step(self, step, progress):
            out = super().train_step(step, progress)
            if step >= 50:  # a new, much larger objective (a new stage)
                self.objective_version = 1
                out["loss"] = out["loss"] * 1e9 + 1e3
            return out

    state = train(Staged(), TrainConfig(steps=80, max_seconds=60, eval_every=0,
                                        checkpoint_every=0), **quiet())
    assert state.rollbacks == []


# -- checkpoints: early, on SIGTERM, after kill -9; temporaries --


def test_first_checkpoint_comes_early(tmp_path):
    class Slow(LineTask):
        def train_step(self, step, progress):
            time.sleep(0.01)
            return super().train_step(step, progress)

    seen = []

    def on_step(state):
        if (tmp_path / "c.pt").exists() and not seen:
            seen.append(state.step)

    train(Slow(), TrainConfig(steps=60, max_seconds=60, eval_every=0, checkpoint_every=100,
                              first_checkpoint=0.2), checkpoint=tmp_path / "c.pt",
          on_step=on_step, **quiet())
    assert seen and seen[0] < 40


def test_stale_temporaries_are_removed_at_start(tmp_path):
    stale = tmp_path / ".checkpoint.pt.tmp-k3j4h2l1.pt"
    stale.write_bytes(b"x" * 1000)
    other = tmp_path / "notes.txt"
    other.write_text("mine")
    train(LineTask(), TrainConfig(steps=3, max_seconds=60, eval_every=0, checkpoint_every=0),
          checkpoint=tmp_path / "checkpoint.pt", **quiet())
    assert not stale.exists() and other.exists()
    assert clean_stale_temporaries(tmp_path / "missing") == 0


def test_an_interrupted_write_leaves_no_temporary(tmp_path):
    def write(tmp):
        Path(tmp).write_bytes(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "c.pt", write)
    assert list(tmp_path.iterdir()) == []


def _wait_for(predicate, seconds=60.0):
    end = time.time() + seconds
    while time.time() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _fields(*args, cwd=None):
    return subprocess.Popen([sys.executable, "-m", "fields.cli", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture
def tiny_png(tmp_path):
    import imageio.v3 as iio

    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.png"
    iio.imwrite(path, (rng.random((24, 32, 3)) * 255).astype(np.uint8))
    return path


def test_sigterm_checkpoints_and_resume_continues(tmp_path, tiny_png):
    out = tmp_path / "run"
    p = _fields("fit", "image", str(tiny_png), "--output", str(out), "--max-seconds", "120",
                "--model", "siren", "--eval-every", "0")
    # wait until training has begun (the run's config is written just before)
    assert _wait_for(lambda: (out / "config.json").exists())
    time.sleep(3.0)
    p.send_signal(signal.SIGTERM)
    text, _ = p.communicate(timeout=60)
    assert p.returncode == 143, text
    assert "terminated: checkpoint written to" in text and "Traceback" not in text
    steps = read_checkpoint(out / "checkpoint.pt")["train_state"]["step"]
    assert steps > 0
    # the run goes on in its folder
    r = subprocess.run([sys.executable, "-m", "fields.cli", "fit", "image", str(tiny_png),
                        "--resume", str(out / "checkpoint.pt"), "--steps", str(steps + 5),
                        "--model", "siren"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads((out / "metrics.json").read_text())["steps"] == steps + 5


def test_kill_9_loses_at_most_one_checkpoint_interval(tmp_path, tiny_png):
    out = tmp_path / "run"
    p = _fields("fit", "image", str(tiny_png), "--output", str(out), "--max-seconds", "120",
                "--model", "siren", "--eval-every", "0", "--checkpoint-every", "0.5")
    assert _wait_for(lambda: (out / "checkpoint.pt").exists())
    time.sleep(1.2)
    p.kill()
    p.communicate(timeout=30)
    payload = read_checkpoint(out / "checkpoint.pt")  # never a truncated file
    assert payload["train_state"]["step"] > 0
    r = subprocess.run([sys.executable, "-m", "fields.cli", "fit", "image", str(tiny_png),
                        "--resume", str(out / "checkpoint.pt"), "--max-seconds", "1",
                        "--model", "siren"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not list(out.glob(".*.tmp-*"))


# -- checks before training, write errors --


def test_preflight_says_what_it_needs_and_refuses_a_full_disk(tmp_path, monkeypatch):
    line = preflight(tmp_path / "new", 5 << 20, "the checkpoint")
    assert "writable" in line and "5.0 MB needed for the checkpoint" in line
    assert not list((tmp_path / "new").iterdir())  # the probe is gone
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(WriteError, match=r"could not write .*file.*errno"):
        preflight(blocker / "sub", 1)
    import shutil

    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    with pytest.raises(WriteError, match=r"needs about 5\.0 MB .*1000 B is free.*ENOSPC"):
        preflight(tmp_path, 5 << 20)
    task = LineTask()
    with pytest.raises(WriteError):
        train(task, TrainConfig(steps=5, eval_every=0), checkpoint=tmp_path / "c.pt", **quiet())
    assert task.steps_run == 0  # refused before the first step


def test_a_failed_checkpoint_write_is_one_line_and_keeps_the_last_one(tmp_path, monkeypatch):
    ckpt = tmp_path / "c.pt"
    train(LineTask(), TrainConfig(steps=5, eval_every=0, checkpoint_every=0),
          checkpoint=ckpt, **quiet())
    before = ckpt.read_bytes()

    def failing_save(obj, f, *a, **kw):
        Path(f).write_bytes(b"half")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter "
                           "failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(WriteError) as e:
        train(LineTask(), TrainConfig(steps=5, eval_every=0, checkpoint_every=0),
              checkpoint=ckpt, **quiet())
    assert str(e.value).startswith(f"could not write {ckpt}: ")
    assert "errno" in str(e.value) and "\n" not in str(e.value)
    assert ckpt.read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp-*"))


# -- the command line: exit codes, run folders, plain text --


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_fit_image_with_a_huge_learning_rate_exits_1_with_finite_files(tmp_path, tiny_png):
    out = tmp_path / "run"
    r = invoke("fit", "image", tiny_png, "--output", out, "--lr", "1e30", "--steps", "200",
               "--model", "siren")
    assert r.exit_code == 1, r.output
    assert "training diverged" in r.output and "Traceback" not in r.output
    payload = read_checkpoint(out / "checkpoint.pt")
    assert all(torch.isfinite(t).all() for t in payload["state_dict"].values()
               if t.is_floating_point())
    for f in out.glob("*.json"):
        name = f.name
        json.loads(f.read_text(), parse_constant=lambda c, n=name: pytest.fail(f"{n}: {c}"))


def test_an_existing_run_is_never_overwritten(tmp_path, tiny_png):
    out = tmp_path / "run"
    assert invoke("fit", "image", tiny_png, "--output", out, "--steps", "5").exit_code == 0
    (out / "stale.png").write_bytes(b"old render")
    r = invoke("fit", "image", tiny_png, "--output", out, "--steps", "5")
    assert r.exit_code == 2
    assert "already holds a run" in r.output and "--resume" in r.output
    assert "--overwrite" in r.output
    assert (out / "stale.png").exists()
    r = invoke("fit", "image", tiny_png, "--output", out, "--steps", "7", "--overwrite")
    assert r.exit_code == 0, r.output
    assert not (out / "stale.png").exists()
    assert json.loads((out / "metrics.json").read_text())["steps"] == 7
    # --overwrite clears only a fields run
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text('{"theme": "dark"}')
    r = invoke("fit", "image", tiny_png, "--output", foreign, "--steps", "5", "--overwrite")
    assert r.exit_code == 2 and "no config.json of a fields run" in r.output
    assert (foreign / "config.json").read_text() == '{"theme": "dark"}'


def test_resuming_a_checkpoint_of_another_kind_says_so(tmp_path, tiny_png):
    out = tmp_path / "inr"
    assert invoke("fit", "image", tiny_png, "--output", out, "--steps", "3").exit_code == 0
    r = invoke("fit", "flow", "--resume", out / "checkpoint.pt", "--output", tmp_path / "f")
    assert r.exit_code == 2
    assert "this is an INR checkpoint" in r.output and "a scene-flow one" in r.output
    assert "state_dict" not in r.output


def test_errors_and_paths_are_plain_text(tmp_path, tiny_png):
    odd = tmp_path / "out[/y]" / "[bold]x"
    r = invoke("fit", "image", tiny_png, "--output", odd, "--steps", "3")
    assert r.exit_code == 0, r.output
    assert "[/y]" in r.output and "MarkupError" not in r.output
    r = invoke("fit", "image", tiny_png, "--resume", tmp_path / "no[such]file.pt")
    assert r.exit_code == 2 and "no[such]file.pt: no such checkpoint" in r.output


def test_tiny_images_skip_ssim_with_a_note(tmp_path):
    import imageio.v3 as iio

    path = tmp_path / "five.png"
    iio.imwrite(path, (np.random.default_rng(0).random((5, 6, 3)) * 255).astype(np.uint8))
    out = tmp_path / "run"
    r = invoke("fit", "image", path, "--output", out, "--steps", "5")
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["ssim"] is None and "smaller than its 11 px window" in m["notes"][0]
    assert "note: SSIM not measured" in r.output
    assert math.isfinite(m["psnr"])


def test_fields_script_handles_sigterm_outside_training(tmp_path):
    # before training starts (no checkpoint yet): exit 143, no traceback
    code = ("import os, signal, sys\n"
            "sys.argv = ['fields', 'info']\n"
            "from fields.command import terminate_on_sigterm\n"
            "terminate_on_sigterm()\n"
            "try:\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "except KeyboardInterrupt as e:\n"
            "    print(type(e).__name__)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60, env={**os.environ})
    assert r.stdout.strip() == "Terminated", r.stderr


def test_a_run_that_learns_nothing_gets_a_warning():
    class Flat(LineTask):
        def train_step(self, step, progress):
            super().train_step(step, progress)
            return {"loss": 1.0 + 0.01 * (step % 3)}  # never decreases

    state = train(Flat(), TrainConfig(steps=250, max_seconds=60, eval_every=0,
                                      checkpoint_every=0), **quiet())
    assert len(state.warnings) == 1 and "did not decrease in 250 steps" in state.warnings[0]
    state = train(LineTask(), TrainConfig(steps=250, max_seconds=60, eval_every=0,
                                          checkpoint_every=0), **quiet())
    assert state.warnings == []


@pytest.mark.parametrize("hw", [(5, 5), (75, 101)])
def test_videos_of_tiny_or_odd_frames_are_written(tmp_path, hw):
    import imageio.v3 as iio

    from fields.io import write_video

    path = write_video(tmp_path / "v.mp4", [torch.rand(*hw, 3) for _ in range(3)])
    frames = list(iio.imiter(path))
    assert len(frames) == 3 and min(frames[0].shape[:2]) >= min(hw)
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "e.mp4", [])


def test_a_nerf_whose_learning_rate_is_infinite_stops_with_its_last_good_state(
        tmp_path, tiny_scene_dir):
    from conftest import tiny_config

    from fields.data import load_scene
    from fields.nerf import NerfTask

    cfg = tiny_config()
    cfg.lr = float("inf")
    task = NerfTask(load_scene(tiny_scene_dir), cfg, seed=0)
    # its hash grid turns NaN: the loss check catches it (the pruning pass reads NaN
    # densities as empty, so NaN samples reach the loss), or the parameter check where the
    # loss stays finite
    with pytest.raises(Diverged, match=r"'field\.encoding\.params' became non-finite|"
                                       r"the loss became nan"):
        train(task, TrainConfig(steps=50, max_seconds=60, eval_every=0, checkpoint_every=0,
                                snapshot_every=0.0),
              checkpoint=tmp_path / "c.pt", checkpoint_extra=task.checkpoint_extra(),
              **quiet())
    payload = read_checkpoint(tmp_path / "c.pt")
    assert all(torch.isfinite(t).all() for t in payload["state_dict"].values()
               if t.is_floating_point())


def test_a_full_disk_is_refused_before_training(tmp_path, tiny_png, monkeypatch):
    import shutil

    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=100_000))
    r = invoke("fit", "image", tiny_png, "--output", tmp_path / "run", "--steps", "5")
    assert r.exit_code == 1, r.output
    assert "No space left on device: the run needs about" in r.output
    assert "Traceback" not in r.output
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.parametrize("kind, overrides, field", [
    ("nerf", {"lr": -1.0}, "lr"), ("nerf", {"render_steps": 0}, "render_steps"),
    ("sdf", {"batch_near": 0}, "batch_near"), ("neus", {"lr": 0.0}, "lr"),
])
def test_configs_refuse_rates_and_sizes_that_are_not_positive(kind, overrides, field):
    from fields.nerf import NerfConfig
    from fields.sdf.field import SDFConfig
    from fields.sdf.neus import NeusConfig

    cls = {"nerf": NerfConfig, "sdf": SDFConfig, "neus": NeusConfig}[kind]
    with pytest.raises(ValueError, match=f"field '{field}' must be > 0"):
        cls.from_dict(overrides)


def test_noise_far_below_the_starting_loss_is_not_divergence_even_after_resume(tmp_path):
    class Noisy(LineTask):
        def train_step(self, step, progress):
            super().train_step(step, progress)
            if step == 0:
                return {"loss": 1.0}
            return {"loss": 1e-6 if step % 40 == 39 else 1e-12}  # 1e6 x its level, < 1

    cfg = TrainConfig(steps=100, max_seconds=60, eval_every=0, checkpoint_every=0)
    state = train(Noisy(), cfg, checkpoint=tmp_path / "c.pt", **quiet())
    assert state.rollbacks == [] and state.loss_ceiling == 1.0
    cfg.steps = 200
    state = train(Noisy(), cfg, resume=tmp_path / "c.pt", **quiet())
    assert state.rollbacks == [] and state.step == 200


def test_a_resumed_converged_run_gets_no_stall_warning(tmp_path):
    cfg = TrainConfig(steps=300, max_seconds=60, eval_every=0, checkpoint_every=0)
    train(LineTask(), cfg, checkpoint=tmp_path / "c.pt", **quiet())
    cfg.steps = 600  # converged: its loss no longer falls
    state = train(LineTask(), cfg, resume=tmp_path / "c.pt", **quiet())
    assert state.step == 600 and state.warnings == []
