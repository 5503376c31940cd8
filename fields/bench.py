"""Side-by-side performance measurements (`fields bench ...`).

`bench_mlp` protocol (shared/BENCHMARKS.md): an MLP n_in=32 -> width x depth -> n_out=16, ReLU, no
bias; the baseline is the same network as an eager `torch.nn.Sequential` of bias-free
`nn.Linear` + `nn.ReLU`, with the same weights, measured in the same process, interleaved
with each backend so that drift on a shared machine hits both alike. Inference is
`with torch.no_grad(): net(x)`; a train step is zero_grad, forward, `y.square().mean()`,
backward and an Adam step. Each figure is the median over repeated calls after warm-up.

`bench_encoding`: a grid encoding (default the issue's hash grid: 3-D, 16 levels x 2 features,
2^19 entries per level) on each backend against its own torch reference (`grid_reference`,
backend "torch"), same table, same inputs, interleaved. "forward" is
`with torch.no_grad(): enc(x)`; "forward+backward" is `enc(x).backward(g)` for a fixed random
`g`, giving the table gradient (and the input gradient with `input_grad`).
"""

from __future__ import annotations

import itertools
import math
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from fields import _ext
from fields.nn import FusedMLP, GridEncoding


@dataclass
class BenchRow:
    """One figure of `fields bench mlp`: a backend's time for one width, depth, batch and mode,
    and its speed-up against the eager baseline timed in the same run."""

    backend: str
    baseline: str
    width: int
    depth: int
    batch: int
    mode: str  # "forward" | "train"
    samples_per_s: float
    speedup: float
    gflops: float
    ms: float
    peak_fraction: float | None = None  # of the measured FMA peak (CPU rows)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class PeakRow:
    """One figure of `fields bench peak`: the fp32 FMA peak of one instruction set on a
    number of threads (best of the repeats)."""

    isa: str
    threads: int
    gflops: float
    gflops_per_thread: float
    seconds: float

    def as_dict(self) -> dict:
        return asdict(self)


def bench_peak(
    isas: Iterable[str] | None = None,
    threads: Iterable[int] | None = None,
    seconds: float = 0.5,
    repeats: int = 3,
    on_row: Callable[[PeakRow], None] | None = None,
) -> list[PeakRow]:
    """The machine's own fp32 FMA peak (csrc/kernels/peak_cpu.cpp: 12 independent FMA chains
    on the widest vectors of each instruction set, no memory traffic), for each instruction
    set the CPU runs (default: all of them) on 1 thread and on torch's thread count (default),
    each the best of `repeats` runs of about `seconds`."""
    if not _ext.available():
        raise ValueError(f"bench_peak: {_ext.unavailable_reason()}")
    ext = _ext.extension()
    have = list(ext.peak_cpu_isas())
    names = list(isas) if isas is not None else have
    for name in names:
        if name not in have:
            raise ValueError(f"bench_peak: this CPU does not run {name!r}; it runs {have}")
    counts = sorted(set(threads if threads is not None else (1, torch.get_num_threads())))
    if not counts or min(counts) < 1:
        raise ValueError(f"bench_peak: threads must be >= 1, got {counts}")
    if not seconds > 0 or repeats < 1:
        raise ValueError(f"bench_peak: seconds must be > 0 and repeats >= 1, got {seconds}, "
                         f"{repeats}")
    rows = []
    for name in names:
        # calibrate on one thread: iterations for about `seconds`
        iters = 1 << 16
        while True:
            t, _ = ext.peak_cpu_run(name, iters, 1)
            if t > 0.05:
                break
            iters *= 4
        iters = max(1, int(iters * seconds / t))
        for n in counts:
            best = min((ext.peak_cpu_run(name, iters, n) for _ in range(repeats)),
                       key=lambda r: r[0])
            g = best[1] / best[0] / 1e9
            row = PeakRow(isa=name, threads=n, gflops=g, gflops_per_thread=g / n,
                          seconds=best[0])
            rows.append(row)
            if on_row is not None:
                on_row(row)
    return rows


_peaks: dict[tuple[str, int], float] = {}


def peak_gflops(isa: str, threads: int) -> float:
    """The measured FMA peak (GFLOP/s) of `isa` ("avx512", "avx2", "generic") on `threads`
    threads, measured once per process (about a second)."""
    key = (isa, threads)
    if key not in _peaks:
        _peaks[key] = bench_peak([isa], [threads], seconds=0.3, repeats=3)[0].gflops
    return _peaks[key]


def kernel_isa_peak_name(isa: str) -> str:
    """The `bench_peak` instruction set of what `_ext.cpu_isa()` names ("avx512+fma" ->
    "avx512", "avx2+fma" -> "avx2", else "generic")."""
    return "avx512" if isa.startswith("avx512") else "avx2" if isa.startswith("avx2") \
        else "generic"


def mlp_flops(n_in: int, n_out: int, width: int, depth: int, batch: int, mode: str) -> float:
    """FLOPs of one call: 2 per multiply-add; a train step counts 3x the forward."""
    macs = n_in * width + (depth - 1) * width * width + width * n_out
    return 2.0 * macs * batch * (3 if mode == "train" else 1)


def eager_baseline(n_in: int, n_out: int, width: int, depth: int) -> nn.Sequential:
    """The eager torch network the fused MLP is measured against: `depth` bias-free
    Linear + ReLU layers of `width`, then a bias-free Linear to `n_out`."""
    layers: list[nn.Module] = [nn.Linear(n_in, width, bias=False), nn.ReLU()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width, bias=False), nn.ReLU()]
    layers.append(nn.Linear(width, n_out, bias=False))
    return nn.Sequential(*layers)


def _step_fn(net: nn.Module, x: torch.Tensor, mode: str) -> Callable[[], None]:
    if mode == "forward":

        def infer() -> None:
            with torch.no_grad():
                net(x)

        return infer
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def train() -> None:
        opt.zero_grad(set_to_none=True)
        y = net(x)
        y.float().square().mean().backward()
        opt.step()

    return train


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    fns: dict[str, Callable[[], None]], device: torch.device, min_time: float, max_repeats: int
) -> dict[str, float]:
    """Seconds per call of each function, interleaved round by round so that drift hits all
    alike. On the CPU: the median of single calls. On a GPU (shared/BENCHMARKS.md): 3 warm-up
    calls, then the mean over 20 calls between two synchronisations, the median over rounds."""
    if device.type == "cuda":
        return _time_cuda(fns, device, min_time)
    once = {}
    for name, fn in fns.items():  # warm-up: 3 calls, or 1 for calls over half a second
        t0 = time.perf_counter()
        fn()
        _sync(device)
        once[name] = time.perf_counter() - t0
        for _ in range(2 if once[name] < 0.5 else 0):
            fn()
        _sync(device)
    per_round = sum(once.values())
    repeats = max(3, min(max_repeats, math.ceil(min_time / max(per_round, 1e-9))))
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def _time_cuda(fns: dict[str, Callable[[], None]], device: torch.device, min_time: float,
               calls: int = 20) -> dict[str, float]:
    for fn in fns.values():
        for _ in range(3):
            fn()
    _sync(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    spent, rounds = 0.0, 0
    while rounds < 3 or (spent < min_time and rounds < 25):
        for name, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            _sync(device)
            dt = time.perf_counter() - t0
            times[name].append(dt / calls)
            spent += dt
        rounds += 1
    return {name: statistics.median(ts) for name, ts in times.items()}


def available_backends(device: torch.device) -> list[str]:
    """The fused-MLP backends that can run on `device` here ("cpu", "cuda", "tcnn")."""
    backends = []
    if device.type == "cpu" and _ext.available():
        backends.append("cpu")
    if device.type == "cuda" and _ext.has_cuda_kernels():
        backends.append("cuda")
    try:  # the peer, when installed (CUDA only)
        import tinycudann  # noqa: F401

        if device.type == "cuda":
            backends.append("tcnn")
    except ImportError:
        pass
    return backends


def _make_backend(
    name: str,
    base: nn.Sequential,
    n_in: int,
    n_out: int,
    width: int,
    depth: int,
    device: torch.device,
    dtype: torch.dtype,
) -> nn.Module:
    if name == "tcnn":
        import tinycudann as tcnn

        return tcnn.Network(
            n_in,
            n_out,
            {
                "otype": "FullyFusedMLP",
                "activation": "ReLU",
                "output_activation": "None",
                "n_neurons": width,
                "n_hidden_layers": depth,
            },
        )
    net = FusedMLP(n_in, n_out, width, depth, backend=name, dtype=dtype, device=device)
    linears = [m for m in base if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for w, lin in zip(net.weights, linears, strict=True):
            w.copy_(lin.weight)
    return net


def bench_mlp(
    widths: Iterable[int] = (64, 128),
    depth: int | Iterable[int] = 4,
    batches: Iterable[int] = (2**14, 2**16, 2**18, 2**20),
    modes: Iterable[str] = ("forward", "train"),
    backends: Iterable[str] | None = None,
    device: str = "cpu",
    n_in: int = 32,
    n_out: int = 16,
    min_time: float = 1.0,
    max_repeats: int = 20,
    on_row: Callable[[BenchRow], None] | None = None,
) -> list[BenchRow]:
    """Measures every backend against the eager torch baseline; returns one row per figure
    (the baseline's own rows have backend "torch" and speedup 1). `depth`: one or several."""
    dev = torch.device(device)
    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    names = list(backends) if backends is not None else available_backends(dev)
    depths = [depth] if isinstance(depth, int) else list(depth)
    rows: list[BenchRow] = []
    peak = None
    if dev.type == "cpu" and _ext.available():
        peak = peak_gflops(kernel_isa_peak_name(_ext.cpu_isa()), torch.get_num_threads())
    for width, depth, batch in itertools.product(widths, depths, batches):
        torch.manual_seed(0)
        base = eager_baseline(n_in, n_out, width, depth).to(dev, dtype)
        nets = {"torch": base}
        for name in names:
            nets[name] = _make_backend(name, base, n_in, n_out, width, depth, dev, dtype)
        x = torch.rand(batch, n_in, device=dev, dtype=dtype)
        for mode in modes:
            fns = {name: _step_fn(net, x, mode) for name, net in nets.items()}
            secs = time_interleaved(fns, dev, min_time, max_repeats)
            flops = mlp_flops(n_in, n_out, width, depth, batch, mode)
            for name, s in secs.items():
                row = BenchRow(
                    backend=name,
                    baseline="torch",
                    width=width,
                    depth=depth,
                    batch=batch,
                    mode=mode,
                    samples_per_s=batch / s,
                    speedup=secs["torch"] / s,
                    gflops=flops / s / 1e9,
                    ms=s * 1e3,
                    peak_fraction=flops / s / 1e9 / peak if peak else None,
                )
                rows.append(row)
                if on_row is not None:
                    on_row(row)
    return rows


@dataclass
class BatchedBenchRow:
    """One figure of `fields bench tiny-mlp`: one way of running many tiny networks (rows
    grouped by network) against the fused batched kernels, timed in the same run."""

    method: str  # "batched" (fused kernels) | "reference" (padded bmm) | "loop" (FusedMLP per net)
    baseline: str
    nets: int
    width: int
    depth: int
    batch: int
    mode: str  # "forward" | "train"
    samples_per_s: float
    speedup: float  # the baseline's time / this method's
    gflops: float
    ms: float
    peak_fraction: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _batched_calls(fused: nn.Module, ref: nn.Module, one: FusedMLP, x: torch.Tensor,
                   net: torch.Tensor, train: bool, loop: bool) -> dict[str, Callable[[], None]]:
    """`bench_batched_mlp`'s calls: the batched module `fused` (its kernels), `ref` (its
    reference) and, with `loop`, `one` fused MLP called network by network with each
    network's weights of `fused`."""
    from fields.nn.batched_mlp import group_rows

    n_nets = fused.n_nets

    def step(m: nn.Module) -> Callable[[], None]:
        def fn() -> None:
            with torch.set_grad_enabled(train):
                y = m(x, net)
                if train:
                    m.zero_grad(set_to_none=True)
                    y.sum().backward()
        return fn

    def looped() -> None:
        order, offsets = group_rows(net, n_nets)
        xs = x[order]
        bounds = offsets.tolist()
        for c in range(n_nets):
            a, b = bounds[c], bounds[c + 1]
            if a == b:
                continue
            for dst, src in zip([*one.weights, *one.biases], [*fused.weights, *fused.biases],
                                strict=True):
                dst.data = src.data[c]  # the network's weights, no copy
            with torch.set_grad_enabled(train):
                y = one(xs[a:b])
                if train:
                    y.sum().backward()

    fns = {"batched": step(fused), "reference": step(ref)}
    if loop:
        fns["loop"] = looped
    return fns


def bench_batched_mlp(
    nets: int = 4096,
    width: int = 32,
    depth: int = 2,
    batches: Iterable[int] = (2**16, 2**18),
    modes: Iterable[str] = ("forward", "train"),
    n_in: int = 63,
    n_out: int = 4,
    loop: bool = True,
    min_time: float = 1.0,
    max_repeats: int = 20,
    on_row: Callable[[BatchedBenchRow], None] | None = None,
) -> list[BatchedBenchRow]:
    """KiloNeRF's shape by default (16^3 networks, 63 inputs: a position with 10 frequency
    bands): the fused batched kernels (`BatchedMLP`, backend "cpu") against its torch
    reference (backend "torch") and, with `loop`, one fused `FusedMLP` call per network on
    its rows (what a user would write without the batched kernels). Rows are uniformly random
    over the networks; each call groups them (the sort is timed too)."""
    from fields.nn.batched_mlp import BatchedMLP

    if not _ext.available():
        raise ValueError(f"bench_batched_mlp: {_ext.unavailable_reason()}")
    peak = peak_gflops(kernel_isa_peak_name(_ext.cpu_isa()), torch.get_num_threads())
    rows: list[BatchedBenchRow] = []
    for batch in batches:
        torch.manual_seed(0)
        fused = BatchedMLP(nets, n_in, n_out, width, depth, backend="cpu")
        ref = BatchedMLP(nets, n_in, n_out, width, depth, backend="torch")
        ref.load_state_dict(fused.state_dict())
        x = torch.rand(batch, n_in)
        net = torch.randint(0, nets, (batch,))
        one = FusedMLP(n_in, n_out, width, depth, bias=True, backend="cpu")
        for mode in modes:
            fns = _batched_calls(fused, ref, one, x, net, mode == "train", loop)
            secs = time_interleaved(fns, torch.device("cpu"), min_time, max_repeats)
            flops = mlp_flops(n_in, n_out, width, depth, batch, mode)
            for name, sec in secs.items():
                row = BatchedBenchRow(
                    method=name, baseline="batched", nets=nets, width=width, depth=depth,
                    batch=batch, mode=mode, samples_per_s=batch / sec,
                    speedup=secs["batched"] / sec, gflops=flops / sec / 1e9, ms=sec * 1e3,
                    peak_fraction=flops / sec / 1e9 / peak if peak else None,
                )
                rows.append(row)
                if on_row is not None:
                    on_row(row)
    return rows


ENCODING_MODES = ("forward", "forward+backward")


@dataclass
class EncodingBenchRow:
    """One figure of `fields bench encoding`: a grid backend against its torch reference."""

    backend: str
    baseline: str
    encoding: str
    n_dims: int
    n_levels: int
    n_features: int
    log2_hashmap_size: int
    batch: int
    mode: str  # "forward" | "forward+backward"
    samples_per_s: float
    speedup: float
    ms: float

    def as_dict(self) -> dict:
        return asdict(self)


def _encoding_step(enc: GridEncoding, x: torch.Tensor, g: torch.Tensor, mode: str):
    if mode == "forward":

        def infer() -> None:
            with torch.no_grad():
                enc(x)

        return infer

    def fwd_bwd() -> None:
        enc.params.grad = None
        if x.grad is not None:
            x.grad = None
        enc(x).backward(g)

    return fwd_bwd


def bench_encoding(
    batches: Iterable[int] = (2**16, 2**18),
    n_dims: int = 3,
    n_levels: int = 16,
    n_features: int = 2,
    log2_hashmap_size: int = 19,
    base_resolution: int = 16,
    per_level_scale: float = 2.0,
    interpolation: str = "Linear",
    grid_type: str = "Hash",
    modes: Iterable[str] = ENCODING_MODES,
    input_grad: bool = False,
    backends: Iterable[str] | None = None,
    min_time: float = 1.0,
    max_repeats: int = 20,
    on_row: Callable[[EncodingBenchRow], None] | None = None,
    device: str = "cpu",
) -> list[EncodingBenchRow]:
    """Each grid backend against the torch reference; one row per figure (the reference's own
    rows have backend "torch" and speedup 1). On a GPU (`device="cuda"`) the CUDA kernels."""
    dev = torch.device(device)
    if backends is not None:
        names = list(backends)
    elif dev.type == "cuda":
        names = ["cuda"] if _ext.has_cuda_kernels() else []
    else:
        names = ["cpu"] if _ext.available() else []
    for m in modes:
        if m not in ENCODING_MODES:
            raise ValueError(f"bench_encoding: mode {m!r}; expected one of {ENCODING_MODES}")
    torch.manual_seed(0)
    encs = {
        name: GridEncoding(
            n_dims,
            n_levels=n_levels,
            n_features_per_level=n_features,
            log2_hashmap_size=log2_hashmap_size,
            base_resolution=base_resolution,
            per_level_scale=per_level_scale,
            interpolation=interpolation,
            grid_type=grid_type,
            backend=name,
            device=dev,
        )
        for name in ["torch", *names]
    }
    for enc in encs.values():
        enc.params = encs["torch"].params  # one table for all
    label = {"Hash": "HashGrid", "Dense": "DenseGrid", "Tiled": "TiledGrid"}[grid_type]
    rows: list[EncodingBenchRow] = []
    for batch in batches:
        x = torch.rand(batch, n_dims, device=dev).requires_grad_(input_grad)
        g = torch.randn(batch, n_levels * n_features, device=dev)
        for mode in modes:
            fns = {name: _encoding_step(enc, x, g, mode) for name, enc in encs.items()}
            secs = time_interleaved(fns, dev, min_time, max_repeats)
            for name, sec in secs.items():
                row = EncodingBenchRow(
                    backend=name,
                    baseline="torch",
                    encoding=label,
                    n_dims=n_dims,
                    n_levels=n_levels,
                    n_features=n_features,
                    log2_hashmap_size=log2_hashmap_size,
                    batch=batch,
                    mode=mode + (" (+dx)" if input_grad and mode != "forward" else ""),
                    samples_per_s=batch / sec,
                    speedup=secs["torch"] / sec,
                    ms=sec * 1e3,
                )
                rows.append(row)
                if on_row is not None:
                    on_row(row)
    return rows


@dataclass
class MarchBenchRow:
    """One figure of `fields bench march`: the ray marcher against its torch reference."""

    backend: str
    baseline: str
    n_rays: int
    resolution: int
    occupancy: float
    samples: int
    rays_per_s: float
    speedup: float
    ms: float

    def as_dict(self) -> dict:
        return asdict(self)


def _march_call(
    grid: torch.nn.Module, origins: torch.Tensor, dirs: torch.Tensor, step: float,
    backend: str, counts: dict[str, int],
) -> Callable[[], None]:
    def fn() -> None:
        out = grid.sample(origins, dirs, 0.0, 1e10, step, backend=backend)
        counts[backend] = out.ray_indices.shape[0]

    return fn


def bench_march(
    ray_counts: Iterable[int] = (4096, 65536),
    resolution: int = 128,
    occupancy: float = 0.15,
    render_steps: int = 512,
    min_time: float = 1.0,
    max_repeats: int = 20,
    on_row: Callable[[MarchBenchRow], None] | None = None,
) -> list[MarchBenchRow]:
    """The C++ occupancy-grid marcher against its torch reference (`march_rays_reference`):
    rays from a sphere of radius 3 aimed at points of the box [-1, 1]^3, an occupancy grid
    with the given fraction of cells occupied (a ball around the centre, as a scene's content),
    step = box diagonal / `render_steps`; same rays and grid for both, interleaved."""
    from fields.render.occupancy import OccupancyGrid

    if not _ext.available():
        raise ValueError(f"bench_march: {_ext.unavailable_reason()}")
    if not 0.0 < occupancy <= 1.0:
        raise ValueError(f"bench_march: occupancy must be in (0, 1], got {occupancy}")
    gen = torch.Generator().manual_seed(0)
    grid = OccupancyGrid([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0], resolution, "none")
    centres = (torch.arange(resolution) + 0.5) / resolution * 2 - 1
    r2 = sum(c**2 for c in torch.meshgrid(centres, centres, centres, indexing="ij"))
    # a ball holding the requested fraction of cells
    grid.occupied.copy_(r2 <= torch.quantile(r2.reshape(-1)[::7], occupancy))
    step = 2 * math.sqrt(3) / render_steps
    rows: list[MarchBenchRow] = []
    for n in ray_counts:
        d = torch.randn(n, 3, generator=gen)
        origins = 3.0 * d / d.norm(dim=-1, keepdim=True)
        target = torch.rand(n, 3, generator=gen) * 2 - 1
        dirs = target - origins
        dirs = dirs / dirs.norm(dim=-1, keepdim=True)
        counts: dict[str, int] = {}
        fns = {b: _march_call(grid, origins, dirs, step, b, counts) for b in ("torch", "cpu")}
        secs = time_interleaved(fns, torch.device("cpu"), min_time, max_repeats)
        for name, sec in secs.items():
            row = MarchBenchRow(
                backend=name, baseline="torch", n_rays=n, resolution=resolution,
                occupancy=float(grid.occupancy_fraction), samples=counts[name],
                rays_per_s=n / sec, speedup=secs["torch"] / sec, ms=sec * 1e3,
            )
            rows.append(row)
            if on_row is not None:
                on_row(row)
    return rows


@dataclass
class FlowBenchRow:
    """One row of `fields bench flow`: a method's errors and time on one built-in pair, with
    its speed-up and EPE ratio against the baseline method."""

    pair: str
    method: str
    epe3d: float
    acc_strict: float
    acc_relax: float
    outliers: float
    angle_error: float
    iters: int
    seconds: float
    # on the summary rows ("mean" pair): the baseline's seconds / this method's, and this
    # method's EPE3D / the baseline's, over the same pairs
    speedup: float | None = None
    epe_ratio: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def bench_flow(
    times: Sequence[int] = (0, 6, 12),
    seed: int = 0,
    methods: Sequence[str] = ("nsfp", "dt"),
    baseline: str = "nsfp",
    n_points: int = 8192,
    on_row: Callable[[FlowBenchRow], None] | None = None,
    on_progress: Callable[[str], None] | None = None,
    seeds: int = 1,
) -> list[FlowBenchRow]:
    """Every scene-flow method with its defaults on the built-in lidar pairs (frames t, t + 1
    of the street scene for each t in `times`, scene `seed`), one after the other in this
    process, each with `seeds` network initialisations (seeds seed, seed + 1, ...); then one
    summary row per method: mean errors, total seconds (set-up included) and the speed and EPE
    ratios against `baseline`."""
    if not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"bench_flow: seeds must be a positive integer, got {seeds!r}")
    from fields.flow import FlowConfig, fit_flow
    from fields.metrics import scene_flow_metrics
    from fields.scenes.street import make_flow_pair

    rows: list[FlowBenchRow] = []
    for t in times:
        pair = make_flow_pair(seed=seed, n_points=n_points, time=t)
        gt = torch.from_numpy(pair.flow)
        for net_seed in range(seed, seed + seeds):
            name = pair.name if seeds == 1 else f"{pair.name} #{net_seed}"
            for method in methods:
                if on_progress is not None:
                    on_progress(f"{name}: {method}")
                cfg = FlowConfig.for_method(method, seed=net_seed)
                fit = fit_flow(pair.source, pair.target, cfg)
                m = scene_flow_metrics(fit.flow, gt)
                row = FlowBenchRow(name, method, m["epe3d"], m["acc_strict"], m["acc_relax"],
                                   m["outliers"], m["angle_error"], fit.iters, fit.seconds)
                rows.append(row)
                if on_row is not None:
                    on_row(row)
    summary: dict[str, FlowBenchRow] = {}
    for method in methods:
        mine = [r for r in rows if r.method == method]
        summary[method] = FlowBenchRow(
            "mean", method,
            *(float(np.mean([getattr(r, k) for r in mine]))
              for k in ("epe3d", "acc_strict", "acc_relax", "outliers", "angle_error")),
            sum(r.iters for r in mine), sum(r.seconds for r in mine),
        )
    if baseline in summary:
        base = summary[baseline]
        for row in summary.values():
            row.speedup = base.seconds / row.seconds
            row.epe_ratio = row.epe3d / base.epe3d if base.epe3d > 0 else None
    for row in summary.values():
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows


@dataclass
class INRBenchRow:
    """One row of `fields bench inr`: a model's quality, steps and size after the same time."""

    model: str
    description: str
    psnr: float
    ssim: float
    steps: int
    seconds: float
    params: int
    history: list = field(default_factory=list)

    def as_dict(self, history: bool = True) -> dict:
        d = asdict(self)
        if not history:
            d.pop("history")
        return d


def bench_inr(
    image: torch.Tensor,
    models: Sequence[str],
    seconds: float = 60.0,
    on_row: Callable[[INRBenchRow], None] | None = None,
    seed: int = 1337,
) -> list[INRBenchRow]:
    """Every model of `models` (names of `fields.inr.MODELS`) fitted to `image` (H, W, C) in
    [0, 1] for the same training time, one after the other in this process, each with its
    default learning rate and batch. PSNR and SSIM of the final reconstruction."""
    from fields.data.signals import grid_coords
    from fields.inr import MODELS, fit_signal, render_signal
    from fields.metrics import ssim
    from fields.nn.modules import count_parameters

    h, w, c = image.shape
    coords, values = grid_coords((h, w)), image.reshape(-1, c)
    rows = []
    for name in models:
        fit = fit_signal(coords, values, name, finest=max(h, w), seconds=seconds, seed=seed)
        recon = render_signal(fit.field, (h, w)).clamp(0, 1)
        row = INRBenchRow(name, MODELS[name].description, fit.psnr, ssim(recon, image),
                          fit.steps, fit.seconds, count_parameters(fit.field), fit.history)
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows
