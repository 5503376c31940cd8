"""`fields bench dynamic`: the dynamic models and the static baseline fitted to one multi-view
video, one after the other in this process, with the same training time and seeds, scored
on the held-out views at the held-out times."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from fields.data.dataset import SceneData


@dataclass
class DynamicBenchRow:
    """One fit of `bench_dynamic`: its scores (held-out views at held-out times; the training
    views at held-out times as `psnr_seen_views`), budget and speed, and the periodic
    held-out PSNR (`history`: records with "seconds" and "psnr")."""

    model: str
    seed: int
    psnr: float
    ssim: float | None
    psnr_seen_views: float | None
    steps: int
    seconds: float
    samples_per_s: float
    params: int
    history: list[dict[str, float]] = field(default_factory=list)

    def as_dict(self, history: bool = True) -> dict[str, Any]:
        """The row as JSON-ready values (without the evaluation history unless `history`)."""
        d = asdict(self)
        if not history:
            d.pop("history")
        return d


def summarise(rows: Sequence[DynamicBenchRow]) -> dict[str, dict[str, float]]:
    """Per model: the number of fits and the mean, smallest and largest held-out PSNR over
    its seeds (and the mean SSIM when every fit has one)."""
    out: dict[str, dict[str, float]] = {}
    for model in dict.fromkeys(r.model for r in rows):
        mine = [r for r in rows if r.model == model]
        psnrs = [r.psnr for r in mine]
        ssims = [r.ssim for r in mine if r.ssim is not None]
        out[model] = {"fits": len(mine), "psnr_mean": statistics.fmean(psnrs),
                      "psnr_min": min(psnrs), "psnr_max": max(psnrs)}
        if len(ssims) == len(mine):
            out[model]["ssim_mean"] = statistics.fmean(ssims)
    return out


def bench_dynamic(
    data: SceneData,
    models: Sequence[str],
    seeds: Sequence[int],
    seconds: float,
    out: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    eval_every: float = 60.0,
    steps: int = 10**9,
    run_info: dict[str, Any] | None = None,
    on_row: Callable[[DynamicBenchRow], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> list[DynamicBenchRow]:
    """Fits every model of `models` (names of `fields.dynamic.MODELS`) with every seed of
    `seeds` to `data` for `seconds` of training each (or `steps`), one after the other.
    `overrides`: `DynamicConfig` keys for every fit. With `out`, each fit writes a run folder
    ``out/<model>-seed<seed>/`` as `fields fit dynamic` does (checkpoint.pt, metrics.json,
    and config.json with `run_info`: where the data came from, so that `fields eval` and
    `fields render` find it), and the first seed's held-out renders, side by side with the
    ground truth, go to ``out/comparison.png``."""
    from fields.dynamic.model import MODELS, DynamicConfig, DynamicTask
    from fields.io import write_json
    from fields.nn.modules import count_parameters
    from fields.train import TrainConfig, seed_everything, train

    bad = [m for m in models if m not in MODELS]
    if bad:
        raise ValueError(f"unknown model(s) {bad}; expected some of {list(MODELS)}")
    if not seeds:
        raise ValueError("expected at least one seed")
    if seconds <= 0:
        raise ValueError(f"seconds must be > 0, got {seconds:g}")
    rows: list[DynamicBenchRow] = []
    shown: dict[str, list[dict[str, torch.Tensor]]] = {}
    for model in models:
        for seed in seeds:
            seed_everything(seed)
            cfg = DynamicConfig.from_dict({**(overrides or {}), "model": model})
            task = DynamicTask(data, cfg, seed=seed)
            run_dir = Path(out) / f"{model}-seed{seed}" if out is not None else None
            if run_dir is not None:
                write_json(run_dir / "config.json", {
                    "kind": "dynamic", "input": data.name, "steps": steps,
                    "max_seconds": seconds, "seed": seed, "model": model,
                    **(run_info or {}), "config": task.config.to_dict()})
            if log is not None:
                log(f"fitting {model} (seed {seed}) for {seconds:g} s")
            state = train(task, TrainConfig(steps=steps, max_seconds=seconds,
                                            eval_every=eval_every, checkpoint_every=0,
                                            seed=seed),
                          checkpoint=run_dir / "checkpoint.pt" if run_dir else None,
                          checkpoint_extra=task.checkpoint_extra(), log=log)
            task.module.eval()
            with torch.no_grad():
                final = task.evaluate(final=True)
            if model not in shown:
                shown[model] = task.last_eval_images
            row = DynamicBenchRow(
                model, seed, float(final["psnr"]), final["ssim"],
                final.get("psnr_seen_views"), state.step, state.seconds,
                task.samples_trained / max(state.seconds, 1e-9),
                count_parameters(task.model), list(state.history))
            rows.append(row)
            if run_dir is not None:
                write_json(run_dir / "metrics.json", row.as_dict())
            if on_row is not None:
                on_row(row)
    if out is not None and shown:
        write_comparison(Path(out) / "comparison.png", shown)
    return rows


def write_comparison(path: Path, shown: dict[str, list[dict[str, torch.Tensor]]],
                     views: int = 3) -> Path:
    """An image of up to `views` held-out views at their times (rows): the ground truth,
    then each model's render (columns, in the order of `shown`), 2 px apart."""
    from fields.data.images import write_image

    first = next(iter(shown.values()))
    picks = torch.linspace(0, len(first) - 1, min(views, len(first))).round().long().unique()
    rows = []
    for i in picks.tolist():
        tiles = [first[i]["gt"]] + [imgs[i]["rgb"] for imgs in shown.values()]
        gap = torch.ones(tiles[0].shape[0], 2, 3)
        rows.append(torch.cat([t for tile in tiles for t in (tile[..., :3], gap)][:-1], dim=1))
    gap = torch.ones(2, rows[0].shape[1], 3)
    image = torch.cat([t for r in rows for t in (r, gap)][:-1], dim=0)
    write_image(path, image.clamp(0, 1))
    return path
