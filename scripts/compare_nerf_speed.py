"""NeRF training throughput of this checkout against another one, in the same run.

    .venv/bin/python scripts/compare_nerf_speed.py --other /path/to/other/checkout

The other checkout needs its own `fields._C` built in place (`git worktree add /tmp/base
<commit> && cd /tmp/base && ../path/.venv/bin/python setup.py build_ext --inplace`). Each
round runs a fresh process per checkout, alternately: the built-in scene, `--warmup` steps,
then `--steps` timed steps; it prints steps/s, rays/s and samples/s of each and their ratio.
Uses only what both sides have (`load_posed_images`, `NerfTask.train_step`), so it measures
checkouts older than `fields bench nerf`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]

WORKER = """
import json, sys, time
import torch
from fields.command import load_posed_images
from fields.nerf import NerfConfig, NerfTask
warmup, steps, res = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
scene, _ = load_posed_images(None, 1, res)
task = NerfTask(scene, NerfConfig(), seed=0)
total = warmup + steps
for s in range(warmup):
    task.train_step(s, s / total)
r0, s0, t0 = task.rays_trained, task.samples_trained, time.perf_counter()
for s in range(warmup, total):
    task.train_step(s, s / total)
dt = time.perf_counter() - t0
print(json.dumps({"steps_per_s": steps / dt, "rays_per_s": (task.rays_trained - r0) / dt,
                  "samples_per_s": (task.samples_trained - s0) / dt}))
"""


def run(checkout: Path, warmup: int, steps: int, resolution: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    out = subprocess.run([sys.executable, "-c", WORKER, str(warmup), str(steps),
                          str(resolution)], env=env, cwd=checkout, capture_output=True,
                         text=True, check=False)
    if out.returncode != 0:
        sys.exit(f"{checkout}: the worker failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--other", required=True, type=Path, help="the other checkout")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--scene-resolution", type=int, default=128)
    a = ap.parse_args()
    if not (a.other / "fields").is_dir():
        sys.exit(f"{a.other}: not a fields checkout (no fields/ folder)")
    for k in range(a.rounds):
        here = run(HERE, a.warmup, a.steps, a.scene_resolution)
        other = run(a.other.resolve(), a.warmup, a.steps, a.scene_resolution)
        print(f"round {k + 1}: this {here['samples_per_s'] / 1e3:.0f}k samples/s "
              f"({here['steps_per_s']:.2f} steps/s), other {other['samples_per_s'] / 1e3:.0f}k "
              f"({other['steps_per_s']:.2f} steps/s): "
              f"{here['samples_per_s'] / other['samples_per_s']:.2f}x", flush=True)


if __name__ == "__main__":
    main()
