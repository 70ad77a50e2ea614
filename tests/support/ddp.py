"""The environment of the torchrun processes the DDP tests start: one thread each, the venv's programs on PATH,
and none of the variables of a surrounding torch.distributed run."""

from __future__ import annotations

import os

from support.paths import VENV_BIN

ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS="1",
           PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
for _var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
    ENV.pop(_var, None)
