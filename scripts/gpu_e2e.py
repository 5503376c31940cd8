"""End-to-end radiance-field fits on one device, fields' kernels against the torch reference
in the same run: the built-in scene at the given image sizes (128 px is `fields fit nerf`'s
default; 800 px is Blender's size), each fitted for `--seconds` of training with every
backend, then evaluated on every held-out view.

    python scripts/gpu_e2e.py --device cuda --seconds 60 --resolutions 128 800 --out DIR

Prints one JSON line per fit (and writes them to DIR/e2e.jsonl): image size, backend, steps,
training seconds, samples/s, the held-out PSNR over time (periodic evaluations on 4 views)
and at the end (every view), the training seconds to the first periodic evaluation at or
above 30 dB (null: not reached). "kernels" is what `fields fit nerf --device D` runs (the
fused MLP, hash grid and marcher kernels of fields._C where they can run); "torch" switches
every module to the pure-torch reference.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import torch

from fields.command import load_posed_images
from fields.nerf import MODELS, NerfConfig, NerfTask
from fields.nn.grid import GridEncoding
from fields.nn.mlp import FusedMLP
from fields.scenes.tabletop import SceneSpec, ensure_scene
from fields.train import TrainConfig, seed_everything, train


def to_reference(task: NerfTask) -> None:
    """Every network, encoding and the marcher of `task` on the torch reference."""
    for m in task.module.modules():
        if isinstance(m, (FusedMLP, GridEncoding)):
            m.backend = "torch"
    task.grid.sample = functools.partial(task.grid.sample, backend="torch")


def fit(scene, name: str, backend: str, seconds: float, device: str, eval_every: float
        ) -> dict:
    seed_everything(0)
    cfg = NerfConfig.from_dict(MODELS["ngp"]().to_dict())
    task = NerfTask(scene, cfg, seed=0, device=device)
    if backend == "torch":
        to_reference(task)
    curve: list[tuple[float, float]] = []

    def on_eval(state, rec) -> None:
        curve.append((round(rec["seconds"], 2), round(rec["psnr"], 3)))

    wall = time.perf_counter()
    state = train(task, TrainConfig(steps=10**9, max_seconds=seconds, eval_every=eval_every,
                                    checkpoint_every=0), on_eval=on_eval, show_progress=False,
                  log=None)
    task.module.eval()
    with torch.no_grad():
        final = task.evaluate(final=True)
    to30 = next((s for s, p in curve if p >= 30.0), None)
    backends = sorted({f"{type(m).__name__}:{m.last_backend}" for m in task.module.modules()
                       if isinstance(m, (FusedMLP, GridEncoding)) and m.last_backend})
    return {
        "scene": name, "width": scene.train.cameras.width, "backend": backend,
        "device": device if not device.startswith("cuda")
        else torch.cuda.get_device_name(torch.device(device)),
        "modules": backends, "steps": state.step, "train_seconds": round(state.seconds, 2),
        "wall_seconds": round(time.perf_counter() - wall, 2),
        "samples_per_s": round(task.samples_trained / max(state.seconds, 1e-9)),
        "rays_per_s": round(task.rays_trained / max(state.seconds, 1e-9)),
        "psnr_final": round(final["psnr"], 3), "seconds_to_30db": to30, "psnr_curve": curve,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--resolutions", type=int, nargs="+", default=[128, 800])
    ap.add_argument("--backends", nargs="+", default=["kernels", "torch"],
                    choices=["kernels", "torch"])
    ap.add_argument("--eval-every", type=float, default=0.0,
                    help="seconds between periodic evaluations (default: seconds / 6)")
    ap.add_argument("--out", default="e2e_out")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for res in args.resolutions:
        if args.device != "cpu":  # render the scene on the device (the CPU takes long at 800 px)
            t0 = time.perf_counter()
            ensure_scene(SceneSpec(resolution=res), device=args.device)
            print(f"scene at {res} px ready in {time.perf_counter() - t0:.1f} s", flush=True)
        scene, name = load_posed_images(None, 1, res)
        for backend in args.backends:
            try:
                row = fit(scene, name, backend, args.seconds, args.device,
                          args.eval_every or args.seconds / 6)
            except Exception as e:  # one failing fit must not hide the others' figures
                row = {"scene": name, "width": res, "backend": backend,
                       "error": f"{type(e).__name__}: {e}"}
                import traceback

                traceback.print_exc()
            rows.append(row)
            print(json.dumps(row), flush=True)
            with open(out / "e2e.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
