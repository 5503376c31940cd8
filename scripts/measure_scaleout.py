"""Data-parallel overhead on this machine: each workload as 1 process x N threads and as N
gloo ranks x 1 thread (torchrun), the same global batch and steps; prints a table (and
--json rows) of training throughput from each run's metrics.json, with the bytes of
gradients each step all-reduces (from the checkpoint's optimiser state).

    python scripts/measure_scaleout.py --ranks 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WORKLOADS = {
    # name: (fields arguments, what to report from metrics.json)
    "nerf": (["fit", "nerf", "--steps", "300", "--eval-every", "0", "--video-frames", "0"],
             "samples_per_s"),
    "sdf": (["fit", "sdf", "--steps", "400", "--eval-every", "0", "--resolution", "64"],
            "steps_per_s"),
    "image": (["fit", "image", "--steps", "400", "--eval-every", "0"], "steps_per_s"),
    "solve": (["solve", "poisson", "--adam-steps", "600", "--lbfgs-steps", "0"], "steps_per_s"),
}


def run(args: list[str], ranks: int, threads: int, out: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK")}
    env["OMP_NUM_THREADS"] = str(threads)
    if ranks == 1:
        cmd = [sys.executable, "-m", "fields", *args, "--threads", str(threads)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", str(ranks), "-m", "fields", *args]
    subprocess.run([*cmd, "--output", str(out)], check=True, env=env, cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    m = json.loads((out / "metrics.json").read_text())
    m["steps_per_s"] = m["steps"] / max(m["seconds"], 1e-9)
    m["gradient_bytes"] = gradient_bytes(out / "checkpoint.pt")
    return m


def gradient_bytes(checkpoint: Path) -> int:
    """The bytes of gradients all-reduced per step: the Adam moments' sizes in the
    checkpoint (one per trained parameter entry)."""
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["optimizer"]["state"]
    return sum(s["exp_avg"].numel() * s["exp_avg"].element_size() for s in state.values()
               if "exp_avg" in s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--only", nargs="*", default=list(WORKLOADS))
    parser.add_argument("--json", action="store_true")
    a = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.only:
            args, key = WORKLOADS[name]
            one = run(args, 1, a.ranks, Path(tmp) / f"{name}-1")
            many = run(args, a.ranks, 1, Path(tmp) / f"{name}-{a.ranks}")
            row = {"workload": name, "metric": key, "one_process": one[key],
                   "ranks": many[key], "ratio": many[key] / one[key],
                   "steps": one["steps"], "gradient_bytes": many["gradient_bytes"]}
            print(json.dumps(row) if a.json else
                  f"{name:6s} {key:14s} 1 process x {a.ranks} threads {one[key]:12.1f}   "
                  f"{a.ranks} ranks x 1 thread {many[key]:12.1f}   ratio {row['ratio']:.2f}   "
                  f"{row['gradient_bytes'] / 1e6:.3f} MB of gradients a step",
                  flush=True)


if __name__ == "__main__":
    main()
