"""Multi-process training with torch DistributedDataParallel, set up from torchrun's environment.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK (and the rendezvous address); without them, or with
WORLD_SIZE 1, everything here is a no-op and training runs in one process exactly as before.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass
class Dist:
    """This process's place in the job; `owned`: this process initialised the group and ends it."""

    device: torch.device
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str = ""
    owned: bool = False

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def env_rank() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) outside torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    return (int(os.environ.get("RANK", "0") or 0), world) if world > 1 else (0, 1)


def setup(device: torch.device, backend: str = "auto", timeout_min: float = 30.0) -> Dist:
    """Join the process group torchrun prepared: one process per GPU (cuda:LOCAL_RANK) with NCCL,
    or CPU processes with gloo. `timeout_min` bounds the longest wait at a collective (rank 0
    validating and checkpointing while the others wait at the barrier)."""
    rank, world = env_rank()
    if world == 1:
        return Dist(device=device)
    local = int(os.environ.get("LOCAL_RANK", rank))
    if device.type == "cuda":
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        visible = torch.cuda.device_count()
        if visible < local_world:
            raise RuntimeError(f"{local_world} training processes on this node need one GPU each, "
                               f"{visible} visible (train.gpus / train.processes)")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise RuntimeError("train.ddp_backend is nccl but training runs on the CPU; use gloo or auto")
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=timedelta(minutes=timeout_min))
    if rank > 0:  # one job log, written as by one process: the others report only warnings and errors
        logging.getLogger("voxflow").setLevel(logging.WARNING)
    return Dist(device=device, rank=rank, world=world, local_rank=local, backend=backend, owned=owned)


def wrap(net: torch.nn.Module, d: Dist) -> torch.nn.Module:
    """DDP around `net` (gradients all-reduced as a mean over processes); BatchNorm, if any, made
    synchronous so that it normalises over the global batch (instance norm is per sample already)."""
    if not d.enabled:
        return net
    from torch.nn.parallel import DistributedDataParallel

    net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
    for p in net.parameters():
        # A 1x1(x1) kernel in channels-last has strides that autograd does not reproduce in its gradient
        # (same layout, size-1 axes): DDP would warn and copy it every step. Contiguous is the same layout.
        if p.dim() >= 4 and all(n == 1 for n in p.shape[2:]):
            p.data = p.data.clone(memory_format=torch.contiguous_format)
    return DistributedDataParallel(net, device_ids=[d.local_rank] if d.device.type == "cuda" else None)


class _Sum(torch.autograd.Function):
    """Sum over processes whose backward sums the gradients too: with every process computing the
    same function of the sum, each gets world x its share, and DDP's mean brings it back to 1x."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:  # noqa: D102
        t = t.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        return grad


def sum_over_processes(t: torch.Tensor) -> torch.Tensor:
    """Differentiable sum of `t` over all processes (loss statistics of the global batch)."""
    return _Sum.apply(t)


def mean_over_processes(values: list[float], d: Dist) -> list[float]:
    """Mean of per-process numbers (e.g. each rank's loss per step), one collective for the list."""
    if not d.enabled or not values:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=d.device if d.backend == "nccl" else "cpu")
    dist.all_reduce(t)
    return (t / d.world).tolist()


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier(device_ids=[d.local_rank] if d.backend == "nccl" else None)


def teardown(d: Dist) -> None:
    """Leave the group (after a last barrier, so no process quits while another still needs it)."""
    if d.enabled and d.owned and dist.is_initialized():
        barrier(d)
        dist.destroy_process_group()
