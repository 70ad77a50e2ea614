"""The train rule's torchrun command (multi-process training, torch DDP with gloo on CPU), taken from the workflow's
dry run: it writes its outputs once and resumes; and a global batch that does not split over the processes stops
the workflow before any job (DDP training itself: tests/unit/training/test_learn_ddp.py)."""

from __future__ import annotations

import copy
import csv
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from support.ddp import ENV
from support.learning import CPU, MODS, synthetic_label, write_store
from support.outputs import tmp_names_under
from support.paths import PROJECT, SCHEMA


def _rule_command(work: Path, cfg: dict) -> str:
    """The shell command Snakemake runs for fold 0's train job (dry run, -p)."""
    import yaml

    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    target = str(Path(cfg["output_dir"]) / "model" / "fold_0" / "model_final.pt")
    res = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(PROJECT / "Snakefile"), "--directory",
                          str(work), "--configfile", str(work / "config.yaml"), "--cores", "2", "-n", "-p", target],
                         cwd=work, env=ENV, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    lines = [ln.strip() for ln in (res.stdout + res.stderr).splitlines() if " step train " in ln]
    assert len(lines) == 1, res.stdout[-3000:]
    return lines[0].removeprefix("Shell command:").strip()


def test_train_rule_runs_under_torchrun_resumes_and_writes_once(tmp_path):
    """The rule's own command (from a dry run) on tiny stores with 2 CPU processes: it resumes a fold
    checkpointed after epoch 1 (by one process: the global batch makes them the same run), and rank 0
    alone logs and writes."""
    from voxflow.settings import validate_config
    from voxflow.planning.planner import make_plans
    from voxflow.planning.fingerprint import fingerprint
    from voxflow.core.split import make_split
    from voxflow.training.train import train_fold

    out = tmp_path / "results"
    user = {"output_dir": str(out), "input": {"layout": "demo", "modalities": MODS},
            "demo": {"n_subjects": 3}, "split": {"n_folds": 2, "test_subjects": ["demo002"]},
            "model": {"base_features": 4, "patch_size": [32, 16, 16], "batch_size": 2},
            "train": {"device": "cpu", "processes": 2, "threads": 2, "epochs": 2, "iters_per_epoch": 2,
                      "val_patches": 2, "workers": 0, "checkpoint_every": 1},
            "infer": {"device": "cpu", "tta": False}}
    cmd = _rule_command(tmp_path, copy.deepcopy(user))
    assert ("-m torch.distributed.run --standalone --nnodes=1 --nproc_per_node=2 -m voxflow.cli step train "
            "--subject fold0") in cmd
    assert cmd.startswith("OMP_NUM_THREADS=$(( 2 / 2 > 0 ? 2 / 2 : 1 ))"), cmd  # the job's threads shared
    words = shlex.split(cmd)
    io = json.loads(words[words.index("--io") + 1])
    assert io["config"]["train"]["processes"] == 2

    # what the upstream rules would have written (stores, split, plans), and a fold stopped after epoch 1
    full = validate_config(copy.deepcopy(user), SCHEMA)
    sp = make_split(["demo000", "demo001", "demo002"], 2, full["split"]["test_fraction"], full["split"]["seed"],
                    ["demo002"])
    stores = {s: str(out / "zarr" / f"{s}.zarr") for s in ("demo000", "demo001")}  # demo002 is the test subject
    for i, path in enumerate(stores.values()):
        write_store(Path(path), synthetic_label(seed=i), seed=i)
    Path(io["input"]["split"]).parent.mkdir(parents=True)
    Path(io["input"]["split"]).write_text(json.dumps(sp))
    Path(io["input"]["stores"]).write_text(json.dumps(stores))  # the training_stores manifest
    plans = make_plans(fingerprint(stores, "threads"), full, MODS, [0, 1, 2, 4], "cpu")
    Path(io["input"]["plans"]).write_text(json.dumps(plans))
    fold = Path(io["output"]["model"]).parent
    f0 = sp["folds"][0]
    train_fold([stores[s] for s in f0["train"]], [stores[s] for s in f0["val"]], plans,
               dict(full["train"], epochs=1), fold, device=CPU, progress=False)
    (fold / "model_final.pt").unlink()
    with open(fold / "curve.csv", newline="") as fh:
        first = list(csv.DictReader(fh))
    log = out / "logs" / "train" / "fold_0.log"
    log.parent.mkdir(parents=True)

    res = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300,
                         check=False)
    text = log.read_text()
    assert res.returncode == 0, res.stderr[-2000:] + text[-4000:]
    assert text.count(f"resuming from {fold / 'checkpoint_latest.pt'} at epoch 1") == 1, text
    assert "DDP: 2 processes (gloo), global batch 2, 1 per process" in text
    assert text.count("epoch 2: {") == 1 and text.count("done train subject=fold0") == 1, text
    ckpt = torch.load(fold / "checkpoint_latest.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["world_size"] == 2
    assert torch.load(fold / "model_final.pt", weights_only=True)["world_size"] == 2
    with open(fold / "curve.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["epoch"] for r in rows] == ["1", "2"] and rows[0] == first[0]  # history kept, one row per epoch
    with np.load(io["output"]["val_predictions"]) as preds:
        assert preds.files == f0["val"]
    assert sorted(p.name for p in fold.iterdir()) == ["checkpoint_latest.pt", "curve.csv", "curve.png",
                                                       "model_final.pt", "val_predictions.npz"]
    assert tmp_names_under(out) == []


def test_batch_that_does_not_split_stops_the_workflow_before_any_job(tmp_path):
    from support.workflow import run_snakemake

    cfg = {"output_dir": str(tmp_path / "results"), "input": {"layout": "demo", "modalities": MODS},
           "split": {"n_folds": 2}, "model": {"batch_size": 5}, "train": {"device": "cpu", "processes": 2}}
    res = run_snakemake(tmp_path, cfg, [], "-n")
    assert res.returncode != 0
    assert ("config error at 'model.batch_size': 5 cannot be split over 2 training processes"
            in res.stdout + res.stderr), res.stdout + res.stderr
    assert not (tmp_path / "results").exists()
