"""Training while the viewer shows the field: the training side of `Viewer.lock`.

A trainer wraps its task in `LockedTask(task, viewer.lock)` and calls `Viewer.training_step`
from its `on_step`; the viewer then never renders a half-updated model.
"""

from __future__ import annotations

from typing import Any


class LockedTask:
    """A training task whose steps (and evaluations) hold `lock`, so that the viewer's renders
    never see a half-updated model. Everything else is the task's own."""

    def __init__(self, task: Any, lock: Any) -> None:
        """`task`: a `fields.train.Task`; `lock`: the viewer's (`Viewer.lock`), a context
        manager."""
        self._task, self._lock = task, lock

    def __getattr__(self, name: str) -> Any:
        return getattr(self._task, name)

    def train_step(self, step: int, progress: float) -> dict[str, float]:
        """The task's step, holding the lock."""
        with self._lock:
            return self._task.train_step(step, progress)

    def evaluate(self, final: bool) -> dict[str, float]:
        """The task's evaluation, holding the lock."""
        with self._lock:
            return self._task.evaluate(final)
