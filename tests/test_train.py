"""The shared training loop: budgets, evaluation, checkpoints, resume, Ctrl-C."""

import pytest
import torch
from torch import nn

from fields.checkpoint import (
    load_checkpoint,
    read_checkpoint,
    read_kind_checkpoint,
    save_checkpoint,
)
from fields.train import TrainConfig, train


class LineTask:
    """Fits y = 3x - 1 with a 1-parameter-pair model."""

    def __init__(self, interrupt_at: int | None = None) -> None:
        torch.manual_seed(0)
        self.module = nn.Linear(1, 1)
        self.optimizer = torch.optim.SGD(self.module.parameters(), lr=0.1)
        self.interrupt_at = interrupt_at
        self.x = torch.linspace(-1, 1, 64)[:, None]
        self.y = 3 * self.x - 1

    def train_step(self, step: int, progress: float) -> dict[str, float]:
        if step == self.interrupt_at:
            raise KeyboardInterrupt
        loss = (self.module(self.x) - self.y).square().mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item()}

    def evaluate(self, final: bool) -> dict[str, float]:
        return {"mse": (self.module(self.x) - self.y).square().mean().item()}


def test_step_budget_and_final_checkpoint(tmp_path):
    task = LineTask()
    cfg = TrainConfig(steps=200, max_seconds=60, eval_every=0, checkpoint_every=0)
    state = train(task, cfg, checkpoint=tmp_path / "c.pt", show_progress=False)
    assert state.step == 200
    assert task.evaluate(True)["mse"] < 1e-6
    payload = read_checkpoint(tmp_path / "c.pt")
    assert payload["train_state"]["step"] == 200


def test_time_budget_stops_training():
    task = LineTask()
    cfg = TrainConfig(steps=10**9, max_seconds=0.05, eval_every=0.01, checkpoint_every=0)
    state = train(task, cfg, show_progress=False)
    assert 0.05 <= state.seconds < 1.0
    assert state.step < 10**9
    assert len(state.history) >= 1 and "mse" in state.history[-1]
    # each evaluation's own wall time, and their sum (reported as a share of the wall time)
    assert all(r["eval_seconds"] >= 0 for r in state.history)
    assert state.eval_seconds == pytest.approx(sum(r["eval_seconds"] for r in state.history),
                                               abs=1e-2)


class SlowEvalTask(LineTask):
    def evaluate(self, final: bool) -> dict[str, float]:
        import time

        time.sleep(0.05)
        return super().evaluate(final)


def test_evaluation_time_is_counted_apart_and_shown(monkeypatch):
    from fields import train as train_module

    shown = []
    real = train_module._RichProgress.evaluating

    def spy(self):
        real(self)
        shown.append(self.progress.tasks[0].fields["status"])

    monkeypatch.setattr(train_module._RichProgress, "evaluating", spy)
    cfg = TrainConfig(steps=10**9, max_seconds=0.05, eval_every=0.02, checkpoint_every=0)
    state = train(SlowEvalTask(), cfg, show_progress=True)
    assert len(shown) == len(state.history) >= 2 and all("evaluating" in t for t in shown)
    assert state.eval_seconds >= 0.05 * len(state.history)
    assert state.seconds < 0.05 + 0.05  # evaluation is not training time


def test_resume_continues_where_it_stopped(tmp_path):
    cfg = TrainConfig(steps=20, max_seconds=60, eval_every=0, checkpoint_every=0)
    a = LineTask()
    train(a, cfg, checkpoint=tmp_path / "a.pt", show_progress=False)
    # one run of 40 steps equals 20 steps, then 20 more resumed from the checkpoint
    b = LineTask()
    train(b, TrainConfig(steps=40, max_seconds=60, eval_every=0, checkpoint_every=0),
          checkpoint=tmp_path / "b.pt", show_progress=False)
    c = LineTask()
    state = train(c, TrainConfig(steps=40, max_seconds=60, eval_every=0, checkpoint_every=0),
                  resume=tmp_path / "a.pt", show_progress=False)
    assert state.step == 40
    for p, q in zip(b.module.parameters(), c.module.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_ctrl_c_leaves_a_usable_checkpoint(tmp_path):
    task = LineTask(interrupt_at=7)
    cfg = TrainConfig(steps=100, max_seconds=60, eval_every=0, checkpoint_every=0)
    with pytest.raises(KeyboardInterrupt):
        train(task, cfg, checkpoint=tmp_path / "c.pt", show_progress=False)
    payload = load_checkpoint(tmp_path / "c.pt", nn.Linear(1, 1))
    assert payload["train_state"]["step"] == 7
    # and training resumes from it
    state = train(LineTask(), cfg, resume=tmp_path / "c.pt", show_progress=False)
    assert state.step == 100


def test_bad_checkpoint_errors(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"bad\.pt"):
        read_checkpoint(bad)
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        read_checkpoint(tmp_path / "missing.pt")
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="'format'"):
        read_checkpoint(tmp_path / "other.pt")


def test_a_checkpoint_of_another_kind_is_named(tmp_path):
    from fields.dynamic.model import LoadedDynamic
    from fields.inr import load_inr
    from fields.nerf import LoadedNerf

    path = tmp_path / "sdf.pt"
    save_checkpoint(path, nn.Linear(1, 1), {"kind": "sdf", "sdf": {"aabb": [0, 1]}})
    payload, info = read_kind_checkpoint(path, "sdf", "sdf", "an SDF")
    assert info == {"aabb": [0, 1]} and payload["kind"] == "sdf"
    with pytest.raises(ValueError, match=r"sdf\.pt: not a NeRF checkpoint \(field 'kind' is "
                                         r"'sdf', expected 'nerf'\)"):
        LoadedNerf(str(path))
    with pytest.raises(ValueError, match="not a dynamic-field checkpoint"):
        LoadedDynamic(str(path))
    with pytest.raises(ValueError, match="not an INR checkpoint"):
        load_inr(path)
    save_checkpoint(path, nn.Linear(1, 1), {"kind": "sdf"})  # the kind's own field missing
    with pytest.raises(ValueError, match="not an SDF checkpoint"):
        read_kind_checkpoint(path, "sdf", "sdf", "an SDF")
