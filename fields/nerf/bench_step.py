"""`fields bench nerf`: where a NeRF training step's time goes.

The step is run as in `fields fit nerf`; after `warmup` steps (the occupancy grid's warm-up,
when every cell is refreshed, is then over), `steps` steps are timed without instruments
(steps/s, rays/s, samples/s), then `profiled` more under the torch profiler. The training
code names its phases (`fields.nn.backend.scope`: "phase:..." labels around ray generation,
marching, pruning, the field's forward, compositing, loss, backward, optimiser, grid update)
and the calls into `fields._C` ("kernel:..." labels: the encoding's and the MLPs' forward and
backward, the marcher, the compositing). Each microsecond of a profiled step is given to one
bucket:

- a kernel label's whole time to that kernel (wherever it ran: the pruning pass's and the
  grid update's density evaluations count as encoding and MLP forward);
- every other torch op's own time (not inside a kernel label) to the innermost phase around
  it ("backward" holds the autograd engine's own ops, "optimiser" Adam's);
- the rest of the step's wall time (Python, argument parsing, the dispatcher, the profiler's
  own cost) to "Python + dispatch".

The phases' inclusive times (kernels included) come in a second list.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

KERNEL = "kernel:"
PHASE = "phase:"

# The buckets in the order of a step.
ORDER = (
    "ray generation", "marching", "kernel:march", "pruning", "kernel:encoding forward",
    "kernel:contract", "kernel:gather rows", "kernel:mlp forward", "field forward", "compositing",
    "kernel:composite forward", "loss",
    "kernel:mlp backward", "kernel:encoding backward", "kernel:composite backward",
    "backward", "optimiser", "grid update", "other ops", "Python + dispatch",
)


@dataclass
class StepProfile:
    """A NeRF step's time: throughput without instruments, and where a profiled step goes."""

    scene: str
    rays_per_step: float
    samples_per_step: float
    steps_per_s: float
    rays_per_s: float
    samples_per_s: float
    ms_per_step: float  # profiled
    buckets: dict[str, float]  # ms per profiled step, exclusive (sums to ms_per_step)
    phases: dict[str, float]  # ms per profiled step, inclusive

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _label(name: str) -> str:
    return name.removeprefix(KERNEL).removeprefix(PHASE)


def attribute(events: Any, wall_us: float) -> tuple[dict[str, float], dict[str, float]]:
    """(exclusive buckets, inclusive phases) in microseconds from the profiler's events of
    the main thread (see the module docstring)."""
    buckets: dict[str, float] = {}
    phases: dict[str, float] = {}

    def add(d: dict[str, float], k: str, v: float) -> None:
        d[k] = d.get(k, 0.0) + v

    thread = None
    for e in events:
        if e.name.startswith(PHASE):
            thread = e.thread
            break
    for e in events:
        if thread is not None and e.thread != thread:
            continue
        name = e.name
        if name.startswith(PHASE):
            add(phases, _label(name), e.cpu_time_total)
            continue
        # inside a kernel label: counted with it
        inner_phase, in_kernel = None, False
        p = e.cpu_parent
        while p is not None:
            if p.name.startswith(KERNEL):
                in_kernel = True
                break
            if inner_phase is None and p.name.startswith(PHASE):
                inner_phase = _label(p.name)
            p = p.cpu_parent
        if in_kernel:
            continue
        if name.startswith(KERNEL):
            add(buckets, name, e.cpu_time_total)
        else:
            add(buckets, inner_phase or "other ops", e.self_cpu_time_total)
    buckets["Python + dispatch"] = max(0.0, wall_us - sum(buckets.values()))
    return buckets, phases


def bench_nerf_step(
    data: Any, name: str, warmup: int = 300, steps: int = 64, profiled: int = 32,
    seed: int = 0, config: Any = None,
) -> StepProfile:
    """Profiles NeRF training steps on `data` (a `SceneData`); see the module docstring."""
    from torch.profiler import ProfilerActivity, profile

    from fields.nerf import NerfConfig, NerfTask

    if min(warmup, steps, profiled) < 1:
        raise ValueError(f"bench_nerf_step: warmup, steps and profiled must be >= 1, got "
                         f"{warmup}, {steps}, {profiled}")
    torch.manual_seed(seed)
    task = NerfTask(data, config or NerfConfig(), seed=seed)
    total = warmup + steps + profiled
    step = 0
    for step in range(warmup):
        task.train_step(step, step / total)
    rays0, samples0 = task.rays_trained, task.samples_trained
    t0 = time.perf_counter()
    for step in range(warmup, warmup + steps):
        task.train_step(step, step / total)
    seconds = time.perf_counter() - t0
    rays, samples = task.rays_trained - rays0, task.samples_trained - samples0
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for step in range(warmup + steps, total):
            task.train_step(step, step / total)
        wall_us = (time.perf_counter() - t0) * 1e6
    buckets, phases = attribute(prof.events(), wall_us)
    per = 1e-3 / profiled
    return StepProfile(
        scene=name,
        rays_per_step=rays / steps,
        samples_per_step=samples / steps,
        steps_per_s=steps / seconds,
        rays_per_s=rays / seconds,
        samples_per_s=samples / seconds,
        ms_per_step=wall_us * per,
        buckets={k: v * per for k, v in sorted(
            buckets.items(), key=lambda kv: ORDER.index(kv[0]) if kv[0] in ORDER else 99)},
        phases={k: v * per for k, v in phases.items()},
    )
