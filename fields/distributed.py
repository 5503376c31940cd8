"""Data-parallel training over ranks (`torch.distributed`, launched by torchrun).

Under ``torchrun --nproc_per_node N -m fields fit ...`` (or multi-node with torchrun's
rendezvous) every process runs the same command; `setup` joins the process group that
torchrun describes in the environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``): NCCL for CUDA tensors where torch has it, gloo for CPU
tensors. Without those variables (or with ``WORLD_SIZE=1``) nothing here communicates and
every helper is the identity, so one process is the one-rank case of the same code.

How a run is split (the rules the kinds follow):

- **Batches.** Every rank draws the *global* batch with the same generator (the same seed,
  the same draws), then keeps its share (`shard`, contiguous slices). The union of the shares
  is exactly the one-process batch, so a run on N ranks computes the one-process loss, and a
  checkpoint's generator state means the same on any world size (`--resume` on another
  world size continues the same sequence of batches).
- **Gradients.** Before every optimiser step (`train` registers the hook), the gradients of
  the optimiser's parameters are averaged over the ranks in one flat all-reduce (a missing
  gradient counts as zeros). With equal shares (batches divisible by the world size: the
  defaults are powers of two) the average of the ranks' mean losses is the global mean loss;
  otherwise the shares differ by one sample and are weighted alike.
- **Everything else is replicated**: parameters, optimiser state and estimators (the
  occupancy grid) start equal and receive equal updates. What a rank computes from its own
  share for shared state (the occupancy grid's densities, the NeRF ray budget's sample count)
  is combined with `all_gather_rows` / `all_sum`.
- **Rank 0** writes checkpoints, configs, metrics and pictures, shows the progress bar and
  runs the evaluations; the budget (training seconds) and the stop flags are agreed every
  step (`agree`), so every rank ends at the same step.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist

# how long a collective waits for a rank before failing (a crashed rank ends the others
# through torchrun; this is the backstop when it cannot)
TIMEOUT = datetime.timedelta(minutes=10)


def launched() -> bool:
    """Whether torchrun (or an equivalent launcher) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    """Whether a process group of more than one rank is up."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if active() else 0


def world_size() -> int:
    """The number of ranks (1 without a process group)."""
    return dist.get_world_size() if active() else 1


def local_rank() -> int:
    """This process's index on its machine (``LOCAL_RANK``; 0 when not launched)."""
    return int(os.environ.get("LOCAL_RANK", "0")) if launched() else 0


def is_main() -> bool:
    """Whether this process writes files and prints (rank 0, or the only process)."""
    return rank() == 0


def restart_count() -> int:
    """How many times torchrun has restarted this run's workers (``--max-restarts``)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


def backend() -> str:
    """gloo for CPU tensors, and NCCL for CUDA tensors where torch has it."""
    if torch.cuda.is_available() and dist.is_nccl_available():
        return "cpu:gloo,cuda:nccl"
    return "gloo"


def setup() -> bool:
    """Joins the process group torchrun describes in the environment (once; idempotent);
    True when this process is one of several ranks. RuntimeError naming the variable when the
    environment is incomplete."""
    if not launched():
        return False
    if active():
        return True
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    for var in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise RuntimeError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {var} is not set: "
                               "launch with torchrun (torchrun --nproc_per_node N -m fields "
                               "fit ...)")
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank() % max(torch.cuda.device_count(), 1))
    dist.init_process_group(backend=backend(), store=_store(), rank=int(os.environ["RANK"]),
                            world_size=int(os.environ["WORLD_SIZE"]), timeout=TIMEOUT)
    return True


def _store() -> dist.Store:
    """The rendezvous store torchrun describes (its agent's, or one rank 0 hosts), with the
    keys of this attempt apart from those of the attempts before a restart (without that,
    restarted ranks read the dead ranks' addresses and wait for them)."""
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == str(True)
    world = int(os.environ["WORLD_SIZE"])
    host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    if agent:
        store = dist.TCPStore(host, port, world, is_master=False, timeout=TIMEOUT)
    else:
        store = dist.TCPStore(host, port, world, is_master=int(os.environ["RANK"]) == 0,
                              timeout=TIMEOUT, multi_tenant=True)
    return dist.PrefixStore(f"fields/attempt_{restart_count()}", store)


def shutdown() -> None:
    """Leaves the process group (when one is up)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def device_for(device: str) -> str:
    """The device a rank trains on: ``cuda`` means this rank's GPU (``cuda:LOCAL_RANK``) when
    launched; anything else as given."""
    if device == "cuda" and launched():
        return f"cuda:{local_rank()}"
    return device


def shard_bounds(n: int) -> tuple[int, int]:
    """[start, stop) of this rank's contiguous share of `n` items (shares differ by at most
    one)."""
    w, r = world_size(), rank()
    return r * n // w, (r + 1) * n // w


def shard(x: torch.Tensor) -> torch.Tensor:
    """This rank's contiguous share of `x` along its first dimension (`x` itself with one
    rank)."""
    if not active():
        return x
    lo, hi = shard_bounds(x.shape[0])
    return x[lo:hi]


def all_sum(values: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """The element-wise sum over ranks of a small vector (float64 on the CPU)."""
    t = torch.as_tensor(values, dtype=torch.float64).reshape(-1).clone()
    if active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_max(values: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """The element-wise maximum over ranks of a small vector (float64 on the CPU)."""
    t = torch.as_tensor(values, dtype=torch.float64).reshape(-1).clone()
    if active():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def all_gather_rows(local: torch.Tensor, n: int) -> torch.Tensor:
    """The global (n, ...) tensor whose rows `shard_bounds(n)` are each rank's `local` (every
    rank gets all of it: one all-reduce of the zero-padded shares)."""
    if not active():
        return local
    lo, hi = shard_bounds(n)
    if local.shape[0] != hi - lo:
        raise ValueError(f"all_gather_rows: this rank's share has {local.shape[0]} rows, "
                         f"expected {hi - lo} of {n}")
    full = torch.zeros((n, *local.shape[1:]), dtype=local.dtype, device=local.device)
    full[lo:hi] = local
    dist.all_reduce(full, op=dist.ReduceOp.SUM)
    return full


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every rank (pickled)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_tensors(tensors: Sequence[torch.Tensor], src: int = 0) -> None:
    """Copies rank `src`'s values of `tensors` (in place) to every rank."""
    if not active():
        return
    for t in tensors:
        dist.broadcast(t.data, src=src)


def average_gradients(params: Sequence[torch.Tensor]) -> None:
    """Replaces each parameter's gradient by its mean over ranks, in one flat all-reduce per
    device and dtype (a missing gradient is zeros on that rank; afterwards every parameter
    that any rank had a gradient for has one)."""
    if not active():
        return
    w = world_size()
    groups: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for p in params:
        groups.setdefault((p.device, p.dtype), []).append(p)
    for (device, dtype), ps in groups.items():
        sizes = [p.numel() for p in ps]
        flat = torch.empty(sum(sizes) + len(ps), dtype=dtype, device=device)
        grads, has = flat[: sum(sizes)], flat[sum(sizes):]  # has: 1 where a gradient exists
        for i, (p, chunk) in enumerate(zip(ps, grads.split(sizes), strict=True)):
            if p.grad is None:
                chunk.zero_()
                has[i] = 0.0
            else:
                if p.grad.is_sparse:
                    raise RuntimeError("average_gradients: sparse gradients are not supported")
                chunk.copy_(p.grad.reshape(-1))
                has[i] = 1.0
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        grads.div_(w)
        for p, chunk, h in zip(ps, grads.split(sizes), has.tolist(), strict=True):
            if h == 0:
                continue  # no rank has a gradient: the optimiser skips it, as with one rank
            if p.grad is None:
                p.grad = chunk.view_as(p).clone()
            else:
                p.grad.copy_(chunk.view_as(p))


def optimizer_params(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The trainable parameters an optimiser steps."""
    return [p for g in opt.param_groups for p in g["params"] if p.requires_grad]


@contextmanager
def averaged_gradients() -> Iterator[None]:
    """While active, every optimiser step (of this thread) first averages its parameters'
    gradients over the ranks. A step given a closure (L-BFGS) is left alone: the closure
    makes the gradients, and must average them itself, or be the same on every rank."""
    if not active():
        yield
        return
    import threading

    from torch.optim.optimizer import register_optimizer_step_pre_hook

    owner = threading.get_ident()

    def pre(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        # torch passes step's own arguments, the optimiser first: (opt, closure?)
        closure = args[1] if len(args) > 1 else kwargs.get("closure")
        if threading.get_ident() != owner or closure is not None:
            return  # a closure makes its own gradients (L-BFGS): it must average them
        average_gradients(optimizer_params(opt))

    handle = register_optimizer_step_pre_hook(pre)
    try:
        yield
    finally:
        handle.remove()
