"""How the train rule launches a fold: one process, or `torchrun` with one process per GPU (DDP).

Torch-free on purpose: the Snakefile calls it at parse time, where importing torch would cost
seconds on every `snakemake` invocation.
"""

from __future__ import annotations

from voxflow.errors import ConfigError


def train_processes(train: dict) -> int:
    """World size of a training job: `train.processes` if given, else `train.gpus`.

    Checked at parse time so that a contradictory config fails before any job runs.
    """
    gpus, procs = int(train.get("gpus", 1)), train.get("processes")
    if procs is not None and gpus > 1 and int(procs) != gpus:
        raise ConfigError(f"config error at 'train.processes': {procs} processes but train.gpus is {gpus}; "
                          "training runs one process per GPU, set only one of them")
    if procs is None and gpus > 1 and train.get("device") == "cpu":
        raise ConfigError(f"config error at 'train.gpus': {gpus} GPUs with train.device 'cpu'; "
                          "for several CPU processes (gloo) set train.processes instead")
    if train.get("ddp_backend") == "nccl" and train.get("device") == "cpu" and (procs or gpus) > 1:
        raise ConfigError("config error at 'train.ddp_backend': nccl needs CUDA, train.device is 'cpu'; "
                          "use gloo or auto")
    return int(procs) if procs is not None else gpus


def global_batch(batch: int, world: int, configured: bool) -> int:
    """The global batch of `world` DDP processes, each training on batch / world samples: an automatic
    batch is rounded up to a multiple of `world` (at least one sample per process, as nnU-Net requires);
    a configured one that does not split evenly is a config error, found at parse time."""
    if world <= 1 or batch % world == 0:
        return batch
    if configured:
        raise ConfigError(f"config error at 'model.batch_size': {batch} cannot be split over {world} training "
                          f"processes (train.gpus / train.processes); use a multiple of {world}")
    return -(-batch // world) * world


def train_gpus(train: dict) -> int:
    """The `gpu` resource of a training job: train.gpus when GPUs are asked for (train.gpu, or more than one GPU)."""
    gpus = int(train.get("gpus", 1))
    return gpus if (train.get("gpu") or gpus > 1) else 0


def launcher(nproc: int, python: str | None = None) -> str:
    """The command that runs `voxflow ...`: itself for one process, torchrun for several.

    `python` (the rules pass the interpreter that runs Snakemake, shell-quoted): `python -m voxflow`
    and `python -m torch.distributed.run` instead of the `voxflow` and `torchrun` scripts, which are
    found only when the environment's bin folder is on PATH.
    `--standalone` rendezvouses on a free local port, so concurrent folds on one node do not collide.
    """
    if nproc <= 1:
        return f"{python} -m voxflow" if python else "voxflow"
    run = f"{python} -m torch.distributed.run" if python else "torchrun"
    return f"{run} --standalone --nnodes=1 --nproc_per_node={nproc} -m voxflow.cli"
