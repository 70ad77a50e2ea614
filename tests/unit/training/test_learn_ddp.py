"""Multi-process training (torch DDP, gloo on CPU): N processes with a global batch B train exactly as
one process with B (losses per step and weights), and the batch-level loss terms are global (the train rule's
torchrun command, from the workflow's dry run: tests/workflow/test_learn_ddp_workflow.py)."""

from __future__ import annotations

import copy
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

from support.ddp import ENV  # noqa: E402
from support.learning import LABEL_VALUES, MODS, synthetic_label, write_store  # noqa: E402
from support.outputs import tmp_names_under  # noqa: E402
from support.paths import SCHEMA  # noqa: E402

CPU = torch.device("cpu")
BATCH, STEPS = 4, 4
# Two processes sum the same float32 terms in another order (two convolutions over 2 samples, then an
# all-reduce, instead of one over 4): measured here, weights differ by <= 6e-8 and losses by <= 2.4e-7 after
# 4 and 8 SGD steps. 1e-5 leaves ~40x headroom for other CPUs' kernels, while training on half the batch
# (what a rank alone would do) moves weights by ~2e-3, so the tolerance still tells the two apart.
RTOL, ATOL = 1e-4, 1e-5


def torchrun(nproc: int, *args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", f"--nproc_per_node={nproc}",
           *args]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("ddp_stores")
    return {f"s{i}": str(write_store(d / f"s{i}.zarr", synthetic_label(seed=i), seed=i)) for i in range(3)}


@pytest.fixture(scope="module")
def cfg(tmp_path_factory) -> dict:
    from voxflow.settings import validate_config

    c = validate_config({"output_dir": str(tmp_path_factory.mktemp("cfg")),
                         "input": {"layout": "demo", "modalities": MODS}}, SCHEMA)
    c["model"].update(base_features=4, patch_size=[32, 16, 16], batch_size=BATCH)
    # every augmentation likely, so that per-sample augmentation is exercised in the comparison
    aug = {"p_rotation": 0.5, "p_scaling": 0.5, "p_elastic": 0.5, "p_noise": 0.5, "p_gamma": 0.5,
           "p_brightness": 0.5, "p_contrast": 0.5}
    c["train"].update(device="cpu", epochs=1, iters_per_epoch=STEPS, val_patches=0, workers=0, checkpoint_every=1,
                      threads=1, fg_fraction=0.5, augment=aug)
    c["infer"].update(device="cpu", tta=False, overlap=0.25)
    return c


def plans_for(cfg: dict, stores: dict[str, str]) -> dict:
    from voxflow.planning.planner import make_plans
    from voxflow.planning.fingerprint import fingerprint

    return make_plans(fingerprint(stores, "threads"), cfg, MODS, LABEL_VALUES, "cpu")


# --- the launch plan (parse time, no torch) ---------------------------------------------------------------------


def test_launch_plan_from_config():
    from voxflow.errors import ConfigError
    from voxflow.settings.launch import launcher, train_gpus, train_processes

    base = {"device": "auto", "gpu": False, "gpus": 1, "processes": None, "ddp_backend": "auto"}
    assert train_processes(base) == 1 and train_gpus(base) == 0 and launcher(1) == "voxflow"
    assert train_gpus(dict(base, gpu=True)) == 1
    four = dict(base, gpus=4)
    assert train_processes(four) == 4 and train_gpus(four) == 4  # several GPUs are a GPU request
    assert launcher(4) == "torchrun --standalone --nnodes=1 --nproc_per_node=4 -m voxflow.cli"
    cpu = dict(base, device="cpu", processes=3)
    assert train_processes(cpu) == 3 and train_gpus(cpu) == 0
    with pytest.raises(ConfigError, match=r"train\.gpus.*device 'cpu'.*train\.processes"):
        train_processes(dict(base, device="cpu", gpus=2))
    with pytest.raises(ConfigError, match=r"train\.processes.*3 processes but train\.gpus is 2"):
        train_processes(dict(base, gpus=2, processes=3))
    with pytest.raises(ConfigError, match=r"nccl needs CUDA"):
        train_processes(dict(cpu, ddp_backend="nccl"))


def test_plan_splits_the_global_batch_over_the_processes(stores, cfg):
    """The automatic batch (2 for 3D) is rounded up to a multiple of the process count, the memory
    estimate is per process; a configured batch that does not split is a config error, at parse time too."""
    from voxflow.errors import ConfigError
    from voxflow.settings.launch import global_batch

    assert [global_batch(2, w, configured=False) for w in (1, 2, 3, 4)] == [2, 2, 3, 4]
    assert global_batch(6, 3, configured=True) == 6
    with pytest.raises(ConfigError, match=r"model\.batch_size.*5 cannot be split over 2 .*multiple of 2"):
        global_batch(5, 2, configured=True)
    c = copy.deepcopy(cfg)
    c["model"]["batch_size"] = None
    one = plans_for(c, stores)
    c["train"]["processes"] = 3
    three = plans_for(c, stores)
    assert one["batch_size"] == 2 and one["processes"] == 1
    assert three["batch_size"] == 3 and three["processes"] == 3 and three["automatic"]["batch_size"] == 3
    assert three["estimated_memory_gb"] < one["estimated_memory_gb"]  # one sample per process instead of two
    c["model"]["batch_size"] = 4
    with pytest.raises(ConfigError, match=r"4 cannot be split over 3"):
        plans_for(c, stores)


def test_sampler_slices_the_global_batch(stores):
    """Each rank gets its disjoint slice of the very batch one process draws (same patches, same order)."""
    from voxflow.nn.sampler import PatchBatches

    paths = [stores["s0"], stores["s1"]]
    whole = iter(PatchBatches(paths, [16, 16, 16], 4, 0.5, LABEL_VALUES, seed=5))
    parts = [iter(PatchBatches(paths, [16, 16, 16], 4, 0.5, LABEL_VALUES, seed=5, rank=r, world=2)) for r in (0, 1)]
    for _ in range(3):
        img, lab = next(whole)
        (i0, l0), (i1, l1) = next(parts[0]), next(parts[1])
        assert i0.shape[0] == i1.shape[0] == 2
        assert torch.equal(torch.cat([i0, i1]), img) and torch.equal(torch.cat([l0, l1]), lab)
    with pytest.raises(ValueError, match="batch size 3 cannot be split over 2 processes"):
        PatchBatches(paths, [16, 16, 16], 3, 0.5, LABEL_VALUES, rank=0, world=2)


# --- N processes == one process ----------------------------------------------------------------------------------

_WORKER = """
import json, sys, torch
torch.set_num_threads(1)
import torch.distributed as dist
from voxflow.training.train import train_fold
a = json.loads(open(sys.argv[1]).read())
# 1. the loss alone: each rank's slice of a fixed global batch
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
from voxflow.nn import ddp
from voxflow.training.losses import make_loss
data = torch.load(a["loss_data"], weights_only=True)
n = data["target"].shape[0] // world
got = {}
for name, weights, ds in a["losses"]:
    fn = make_loss(name, 4, weights, ds, ddp.sum_over_processes, world)
    logits = (data["logits"] if ds else data["logits"][:, 0])[rank * n:(rank + 1) * n].clone().requires_grad_()
    loss = fn(logits, data["target"][rank * n:(rank + 1) * n])
    loss.backward()
    got[f"{name}_{bool(ds)}"] = {"loss": loss.detach(), "grad": logits.grad}
torch.save(got, f"{a['out']}/loss_rank{rank}.pt")
# 2. training in the same group (train_fold joins one itself when there is none, as under the train rule)
import shutil
for epochs in (1, 2):  # 2: resumed from the checkpoint of the first call
    info = train_fold(a["train"], a["val"], a["plans"], dict(a["cfg"], epochs=epochs), a["out"],
                      device=torch.device("cpu"), progress=False)
    open(f"{a['out']}/info{epochs}_rank{rank}.json", "w").write(json.dumps(info))
    if rank == 0:
        shutil.copy(f"{a['out']}/model_final.pt", f"{a['out']}/model_epoch{epochs}.pt")
dist.destroy_process_group()
"""

LOSSES = [("dice_ce", None, None), ("wce", [0.1, 1.0, 2.0, 3.0], None), ("dice_ce", None, [0.6, 0.4])]


def _loss_data(path: Path) -> dict:
    """A global batch of logits (2 deep-supervision outputs) and a target with classes spread unevenly over samples."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(BATCH, 2, 4, 6, 6, 6, generator=g)
    target = torch.randint(0, 4, (BATCH, 1, 6, 6, 6), generator=g)
    target[0] = 0  # sample 0 pure background: per-rank Dice and weight sums differ from the global ones
    target[1, :, :3] = 3
    torch.save({"logits": logits, "target": target}, path)
    return {"logits": logits, "target": target}


def test_two_processes_match_one_process(stores, cfg, tmp_path):
    from voxflow.training.losses import make_loss
    from voxflow.training.train import train_fold

    plans = plans_for(cfg, stores)
    assert plans["batch_size"] == BATCH
    train, val = [stores["s0"], stores["s1"]], [stores["s2"]]
    one = []
    for epochs in (1, 2):
        one.append(train_fold(train, val, plans, dict(cfg["train"], epochs=epochs), tmp_path / "one", device=CPU,
                              progress=False))
        shutil.copy(tmp_path / "one" / "model_final.pt", tmp_path / "one" / f"model_epoch{epochs}.pt")
    train_fold(train, val, dict(plans, batch_size=BATCH // 2), cfg["train"], tmp_path / "half", device=CPU,
               progress=False)  # its weights are read back below
    assert one[0]["world_size"] == 1 and one[0]["samples"] == BATCH * STEPS and len(one[0]["step_losses"]) == STEPS

    out = tmp_path / "two"
    out.mkdir()
    data = _loss_data(tmp_path / "loss_data.pt")
    args = {"train": train, "val": val, "plans": plans, "cfg": cfg["train"], "out": str(out),
            "loss_data": str(tmp_path / "loss_data.pt"), "losses": LOSSES}
    (tmp_path / "args.json").write_text(json.dumps(args))
    (tmp_path / "worker.py").write_text(_WORKER)
    res = torchrun(2, str(tmp_path / "worker.py"), str(tmp_path / "args.json"))
    assert res.returncode == 0, res.stderr[-6000:]

    # the loss terms are those of the global batch: mean over ranks = full-batch loss; rank gradient = world x
    # the full-batch gradient of its slice (DDP then divides by the world size)
    per_rank = [torch.load(out / f"loss_rank{r}.pt", weights_only=True) for r in (0, 1)]
    for name, weights, ds in LOSSES:
        fn = make_loss(name, 4, weights, ds)
        logits = (data["logits"] if ds else data["logits"][:, 0]).clone().requires_grad_()
        full = fn(logits, data["target"])
        full.backward()
        key = f"{name}_{bool(ds)}"
        mean = (per_rank[0][key]["loss"] + per_rank[1][key]["loss"]) / 2
        torch.testing.assert_close(mean, full.detach(), rtol=1e-5, atol=1e-6, msg=key)
        grad = torch.cat([per_rank[0][key]["grad"], per_rank[1][key]["grad"]]) / 2
        torch.testing.assert_close(grad, logits.grad, rtol=1e-4, atol=1e-7, msg=key)
        # without the global statistics the per-rank losses would average to something else
        naive = [fn(logits.detach()[i:i + 2], data["target"][i:i + 2]) for i in (0, 2)]
        assert abs(float(sum(naive) / 2 - full.detach())) > 1e-3, key

    worst = {}
    for epochs in (1, 2):  # 2: both resumed from their checkpoint after epoch 1
        infos = [json.loads((out / f"info{epochs}_rank{r}.json").read_text()) for r in (0, 1)]
        assert [i["rank"] for i in infos] == [0, 1] and all(i["world_size"] == 2 for i in infos)
        assert all(i["samples"] == BATCH // 2 * STEPS for i in infos), "each rank trains on half of every batch"
        assert infos[1]["step_losses"] == infos[0]["step_losses"]  # the mean over ranks, on every rank
        ref = one[epochs - 1]["step_losses"]
        np.testing.assert_allclose(infos[0]["step_losses"], ref, rtol=RTOL, atol=ATOL, err_msg=f"epoch {epochs}")
        w1 = torch.load(tmp_path / "one" / f"model_epoch{epochs}.pt", weights_only=True)
        w2 = torch.load(out / f"model_epoch{epochs}.pt", weights_only=True)
        assert w2["world_size"] == 2 and w1["world_size"] == 1
        for k, v in w1["model"].items():
            torch.testing.assert_close(w2["model"][k], v, rtol=RTOL, atol=ATOL, msg=f"{k} after epoch {epochs}")
        worst[epochs] = max(float((w2["model"][k] - v).abs().max()) for k, v in w1["model"].items())
        worst[f"loss{epochs}"] = float(np.abs(np.array(infos[0]["step_losses"]) - ref).max())
    # the comparison is sharp: half the batch (what one rank alone would see) moves the weights far more
    wh = torch.load(tmp_path / "half" / "model_final.pt", weights_only=True)["model"]
    w1 = torch.load(tmp_path / "one" / "model_epoch1.pt", weights_only=True)["model"]
    moved = max(float((wh[k] - v).abs().max()) for k, v in w1.items())
    assert moved > 100 * ATOL, (moved, worst)
    print(f"max |2 processes - 1 process|: {worst}; weights with half the batch: {moved:.2e}")
    assert sorted(p.name for p in out.iterdir() if p.name.endswith((".pt", ".csv", ".png"))) == [
        "checkpoint_latest.pt", "curve.csv", "curve.png", "loss_rank0.pt", "loss_rank1.pt", "model_epoch1.pt",
        "model_epoch2.pt", "model_final.pt"]
    assert tmp_names_under(out) == []
    with open(out / "curve.csv", newline="") as fh:
        assert [r["epoch"] for r in csv.DictReader(fh)] == ["1", "2"]  # one row per epoch: rank 0 alone writes


def test_train_batch_must_split_evenly(stores, cfg, tmp_path):
    """A global batch that the processes cannot share evenly is refused before any collective."""
    from voxflow.nn import ddp
    from voxflow.training.train import _train

    plans = dict(plans_for(cfg, stores), batch_size=3)
    with pytest.raises(ValueError,
                       match=r"batch size 3 .* not divisible by 2 training processes; set model.batch_size"):
        _train([stores["s0"]], [], plans, cfg["train"], tmp_path, ddp.Dist(device=CPU, rank=1, world=2), False)
