"""The CPU speed work (issue 28): the caching CPU allocator, the FMA peak, pruning in rounds
and the NeRF step breakdown. Speed itself is measured by commands (`fields bench ...`), not
here: these tests check that what the figures rest on is right."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from fields import _ext
from fields.render.volrend import _prune_in_rounds_torch, prune_in_rounds, prune_samples

needs_ext = pytest.mark.skipif(not _ext.available(), reason=_ext.unavailable_reason())


@needs_ext
def test_cpu_cache_reuses_freed_blocks_and_keeps_values():
    ext = _ext.extension()
    assert ext.cpu_cache_installed()
    ext.cpu_cache_empty()  # no block of another test fits better than ours
    _, hits0, _ = ext.cpu_cache_stats()
    a = torch.empty(3_000_000)  # 12 MB: cached size class
    ptr = a.data_ptr()
    del a
    cached, _, _ = ext.cpu_cache_stats()
    assert cached >= 12_000_000
    b = torch.empty(2_900_000)  # fits the freed block (< 1/4 larger)
    _, hits1, _ = ext.cpu_cache_stats()
    assert hits1 >= hits0 + 1 and b.data_ptr() == ptr
    torch.arange(2_900_000, dtype=torch.float32, out=b)
    assert b.data_ptr() % 64 == 0
    assert float(b[-1]) == 2_899_999.0 and float(b.sum(dtype=torch.float64)) == sum(
        range(2_900_000))
    c = torch.empty(1000)  # small: a plain malloc, never cached
    assert c.data_ptr() != ptr
    del b
    ext.cpu_cache_empty()
    assert ext.cpu_cache_stats()[0] == 0


@needs_ext
def test_cpu_cache_limit_comes_from_the_environment():
    script = ("from fields import _ext; _ext.extension(); "
              "print(_ext.extension().cpu_cache_installed())")
    env = {**os.environ, "FIELDS_CPU_CACHE_MB": "0"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr
    env["FIELDS_CPU_CACHE_MB"] = "lots"
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode != 0 and "FIELDS_CPU_CACHE_MB='lots'" in out.stderr


def _packed(seed: int, rays: int = 400, max_samples: int = 70):
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, max_samples, (rays,), generator=g)
    offsets = torch.zeros(rays + 1, dtype=torch.long)
    offsets[1:] = counts.cumsum(0)
    ray_indices = torch.repeat_interleave(torch.arange(rays), counts)
    n = ray_indices.numel()
    t_starts = torch.rand(n, generator=g)
    t_ends = t_starts + 0.05
    # some rays nearly empty, some opaque
    sigmas = torch.rand(n, generator=g) * (torch.rand(rays, generator=g) ** 3 * 40)[ray_indices]
    return sigmas, t_starts, t_ends, ray_indices, offsets


# prune_in_rounds runs fields._C's bookkeeping on the CPU; the torch ops are the reference
PRUNERS = [pytest.param(_prune_in_rounds_torch, id="torch"),
           pytest.param(prune_in_rounds, id="kernel", marks=needs_ext)]


@pytest.mark.parametrize("prune", PRUNERS)
@pytest.mark.parametrize("seed", range(4))
def test_pruning_in_rounds_keeps_what_full_pruning_keeps(seed, prune):
    sigmas, ts, te, ri, offsets = _packed(seed)
    asked = []

    def density(i):
        asked.append(i)
        return sigmas[i]

    row = torch.full((ri.numel(),), -1, dtype=torch.long)
    keep = prune(density, ts, te, ri, offsets, transmittance_threshold=1e-4, row=row)
    want = prune_samples(sigmas, ts, te, ri, offsets, transmittance_threshold=1e-4)
    assert torch.equal(keep, torch.nonzero(want).squeeze(1))
    evaluated = torch.cat(asked)
    assert evaluated.unique().numel() == evaluated.numel()  # each sample at most once
    assert bool(torch.isin(keep, evaluated).all())
    # terminated rays' later samples were not evaluated
    assert evaluated.numel() < ri.numel()
    # row: each evaluated sample's place among what was asked; the others untouched
    assert torch.equal(row[evaluated], torch.arange(evaluated.numel()))
    rest = torch.ones(ri.numel(), dtype=torch.bool)
    rest[evaluated] = False
    assert bool((row[rest] == -1).all())


@needs_ext
def test_pruning_kernel_agrees_with_torch_on_the_rounds():
    # the same densities asked for, round after round, and the same result
    sigmas, ts, te, ri, offsets = _packed(7, rays=300)
    asked: dict[str, list[torch.Tensor]] = {"torch": [], "kernel": []}
    for name, prune in (("torch", _prune_in_rounds_torch), ("kernel", prune_in_rounds)):
        def density(i, name=name):
            asked[name].append(i)
            return sigmas[i]
        prune(density, ts, te, ri, offsets, first=3)
    assert len(asked["torch"]) == len(asked["kernel"]) > 2
    for a, b in zip(asked["torch"], asked["kernel"], strict=True):
        assert torch.equal(a, b)


@needs_ext
def test_sample_points_kernel_matches_torch():
    g = torch.Generator().manual_seed(3)
    o, d = torch.randn(50, 3, generator=g), torch.randn(50, 3, generator=g)
    ri = torch.randint(0, 50, (400,), generator=g)
    ts = torch.rand(400, generator=g)
    te = ts + torch.rand(400, generator=g)
    want = o[ri] + d[ri] * (0.5 * (ts + te))[:, None]
    ext = _ext.extension()
    assert torch.equal(ext.sample_points_cpu(o, d, ri, ts, te, None), want)
    pick = torch.tensor([399, 0, 17, 17])
    assert torch.equal(ext.sample_points_cpu(o, d, ri, ts, te, pick), want[pick])
    with pytest.raises(RuntimeError, match="out of range"):
        ext.sample_points_cpu(o, d, ri, ts, te, torch.tensor([400]))
    with pytest.raises(RuntimeError, match="ray_indices must be a contiguous"):
        ext.sample_points_cpu(o, d, ri.int(), ts, te, None)


@needs_ext
def test_gather_rows_kernel_matches_cat_and_index():
    """`gather_rows_cpu`: rows of the pruning rounds' encodings without concatenating them,
    parts empty or not, indices in any order, repeated; bad indices and shapes refused."""
    g = torch.Generator().manual_seed(4)
    parts = [torch.randn(n, 32, generator=g) for n in (100, 7, 0, 50, 1)]
    idx = torch.randint(0, 158, (1000,), generator=g)
    idx[:4] = torch.tensor([157, 0, 106, 107])
    ext = _ext.extension()
    assert torch.equal(ext.gather_rows_cpu(parts, idx), torch.cat(parts)[idx])
    assert ext.gather_rows_cpu(parts, idx[:0]).shape == (0, 32)
    with pytest.raises(RuntimeError, match="out of range"):
        ext.gather_rows_cpu(parts, torch.tensor([158]))
    with pytest.raises(RuntimeError, match="parts must all be"):
        ext.gather_rows_cpu([parts[0], torch.zeros(3, 16)], idx)


@pytest.mark.parametrize("prune", PRUNERS)
def test_pruning_in_rounds_handles_empty_and_sample_free_rays(prune):
    empty = torch.zeros(0)
    none = torch.zeros(0, dtype=torch.long)
    keep = prune(lambda i: empty[i], empty, empty, none, torch.zeros(4, dtype=torch.long))
    assert keep.shape == (0,)
    # rays without samples between rays with samples; a NaN density reads as empty, an
    # infinite one ends its ray and no other
    offsets = torch.tensor([0, 0, 3, 3, 5])
    ri = torch.tensor([1, 1, 1, 3, 3])
    ts = torch.arange(5.0)
    sig = torch.tensor([0.0, float("nan"), 1.0, 0.5, 0.5])
    keep = prune(lambda i: sig[i], ts, ts + 1, ri, offsets, first=1)
    assert keep.tolist() == [0, 1, 2, 3, 4]
    sig = torch.tensor([0.0, float("inf"), 1.0, 0.5, 0.5])
    keep = prune(lambda i: sig[i], ts, ts + 1, ri, offsets, first=1)
    assert keep.tolist() == [0, 1, 3, 4]


@needs_ext
def test_peak_bench_measures_each_instruction_set():
    from fields.bench import bench_peak, kernel_isa_peak_name

    isas = _ext.extension().peak_cpu_isas()
    assert "generic" in isas
    assert kernel_isa_peak_name(_ext.cpu_isa()) in isas
    rows = bench_peak(threads=[1], seconds=0.02, repeats=1)
    assert [r.isa for r in rows] == isas
    assert all(r.gflops > 0.1 and r.threads == 1 for r in rows)
    with pytest.raises(ValueError, match="does not run 'sse9'"):
        bench_peak(["sse9"], [1])


@needs_ext
def test_mlp_bench_rows_carry_the_fraction_of_peak():
    from fields.bench import bench_mlp

    rows = bench_mlp(widths=[16], depth=1, batches=[256], modes=["forward"], min_time=0.01,
                     max_repeats=2)
    cpu = [r for r in rows if r.backend == "cpu"]
    assert cpu and all(r.peak_fraction is not None and 0 < r.peak_fraction for r in cpu)


@needs_ext
def test_nerf_step_breakdown_accounts_for_the_whole_step(tiny_scene_dir):
    from conftest import tiny_config

    from fields.data import load_scene
    from fields.nerf.bench_step import bench_nerf_step

    scene = load_scene(tiny_scene_dir)
    r = bench_nerf_step(scene, "tiny", warmup=4, steps=2, profiled=3, config=tiny_config())
    assert r.samples_per_s > 0 and r.rays_per_step > 0
    assert abs(sum(r.buckets.values()) - r.ms_per_step) < 1e-6 * r.ms_per_step + 1e-9
    for k in ("kernel:encoding forward", "kernel:mlp forward", "kernel:mlp backward",
              "kernel:encoding backward", "kernel:march", "optimiser"):
        assert r.buckets.get(k, 0.0) > 0, (k, r.buckets)
    for k in ("marching", "pruning", "field forward", "backward", "optimiser"):
        assert r.phases.get(k, 0.0) > 0, (k, r.phases)
    # kernels inside a phase: the phase's inclusive time holds them
    assert r.phases["field forward"] >= r.buckets["field forward"]


def test_images_load_in_parallel_and_come_back_from_the_cache(tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    from fields.data.blender import load_images

    monkeypatch.setenv("FIELDS_CACHE", str(tmp_path / "cache"))
    g = np.random.default_rng(0)
    paths = []
    for k in range(5):
        arr = (g.random((24, 36, 4)) * 255).astype(np.uint8)
        paths.append(tmp_path / f"im{k}.png")
        Image.fromarray(arr, "RGBA").save(paths[-1])
    first = load_images(paths, downscale=2, background=(0.2, 0.4, 0.6), workers=3)
    cached = sorted((tmp_path / "cache" / "images").glob("*.npz"))
    assert len(cached) == 5
    again = load_images(paths, downscale=2, background=(0.2, 0.4, 0.6), workers=1)
    serial = load_images(paths, downscale=2, background=(0.2, 0.4, 0.6), workers=1)
    for a, b in zip(first[:2] + again[:2], again[:2] + serial[:2], strict=True):
        assert torch.equal(a, b)
    assert first[0].shape == (5, 12, 18, 3) and first[1].shape == (5, 12, 18, 1)
    assert first[2] == (24, 36)
    # what the cache holds is what decoding gives
    for path in cached:
        path.unlink()
    fresh = load_images(paths, downscale=2, background=(0.2, 0.4, 0.6))
    assert torch.equal(fresh[0], first[0]) and torch.equal(fresh[1], first[1])
    # another background, another factor, a changed file: not the cached entry
    load_images(paths, downscale=2, background=(1.0, 1.0, 1.0))
    load_images(paths, downscale=3, background=(0.2, 0.4, 0.6))
    assert len(list((tmp_path / "cache" / "images").glob("*.npz"))) == 15
    Image.fromarray(np.zeros((24, 36, 4), np.uint8), "RGBA").save(paths[0])
    os.utime(paths[0], ns=(1, 1))
    changed = load_images(paths, downscale=2, background=(0.2, 0.4, 0.6))
    assert float(changed[1][0].max()) == 0.0 and torch.equal(changed[0][1:], first[0][1:])
    # no downscale: nothing cached; a size that differs is named
    load_images(paths, downscale=1)
    assert len(list((tmp_path / "cache" / "images").glob("*.npz"))) == 16
    Image.fromarray(np.zeros((20, 36, 3), np.uint8)).save(paths[3])
    with pytest.raises(ValueError, match=r"im3\.png.*36x20"):
        load_images(paths, downscale=2)
