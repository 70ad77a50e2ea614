"""The train rule's step (`voxflow step train`): one fold trained, then its validation subjects predicted whole
(the input of the post-processing decision and of the configuration choice). Heavy imports stay inside the
function so that the DAG's other jobs do not pay for torch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from voxflow.core.stores import subject_stores
from voxflow.planning.plans import Plans


def train(subject: str, inp: dict, out: dict, cfg: dict, threads: int = 1) -> dict:
    import torch

    from voxflow.nn.ddp import env_rank
    from voxflow.inference.predict import predict_probabilities
    from voxflow.training.train import train_fold
    from voxflow.nn.checkpoints import pick_device

    torch.set_num_threads(max(1, threads // env_rank()[1]))  # under torchrun: the job's threads shared
    fold = int(cfg["fold"])
    sp = json.loads(Path(inp["split"]).read_text())
    plans = Plans.load(inp["plans"])
    f = sp["folds"][fold]
    out_dir = Path(out["model"]).parent
    device = pick_device(cfg["train"]["device"])
    stores = subject_stores(inp, f["train"] + f["val"])
    oof = _previous_stage(inp, f["train"] + f["val"], plans, out_dir) if plans.cascade_stage == "fullres" else {}
    train_cfg = cfg["train"] | ({"synthesis_model": inp["synthesis"]} if inp.get("synthesis") else {})
    info = train_fold([stores[s] for s in f["train"]], [stores[s] for s in f["val"]], plans,
                      train_cfg, out_dir, device=device,
                      previous={stores[s]: path for s, path in oof.items()} or None)
    info.pop("step_losses", None)  # for tests; the curve has the epoch means
    if info["rank"] != 0:  # DDP: rank 0 alone writes the outputs
        return info
    torch.set_num_threads(max(1, threads))  # the other processes have finished
    # Full-volume validation predictions: the input of the postprocessing decision.
    preds: dict[str, np.ndarray] = {}
    kept: dict[str, np.ndarray] = {}  # several configurations: the probabilities, to score ensembles on
    for s in f["val"]:
        prev = None
        if oof:  # a cascade's full-resolution stage: its subject's out-of-fold low-resolution prediction
            import zarr

            prev = np.asarray(zarr.open_array(oof[s], mode="r")[:])
        probs, _ = predict_probabilities(stores[s], [out["model"]], cfg["infer"] | {"tta": False}, device,
                                         previous=prev)
        preds[s] = plans.labels.labels_from_probabilities(probs)
        if out.get("val_probabilities"):
            kept[s] = probs.astype(np.float16)

    _write_npz(out["val_predictions"], preds)
    if out.get("val_probabilities"):
        _write_npz(out["val_probabilities"], kept)
    return info


def _previous_stage(inp: dict, subjects: list[str], plans: Plans, out_dir: Path) -> dict[str, str]:
    """A cascade's full-resolution fold: each subject's out-of-fold low-resolution prediction (from the
    low-resolution folds' val_predictions.npz, inputs lowres_<k>), as class indices in a zarr array per subject
    under fold_<k>/previous/ that the sampler reads patch-wise."""
    import zarr

    from voxflow.core.atomic import atomic_path

    where = {}
    for key, path in inp.items():
        if key.startswith("lowres_"):
            with np.load(path) as data:
                where.update({s: path for s in data.files})
    missing = [s for s in subjects if s not in where]
    if missing:
        raise ValueError(f"no out-of-fold low-resolution prediction for {len(missing)} subjects ({missing[:3]}): "
                         "a cascade needs every fold of its low-resolution stage trained (split.folds_to_train: null)")
    out: dict[str, str] = {}
    for s in subjects:
        target = out_dir / "previous" / f"{s}.zarr"
        with np.load(where[s]) as data:
            idx = plans.labels.class_indices(data[s])
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            arr = zarr.create_array(str(tmp), shape=idx.shape, chunks=tuple(min(64, n) for n in idx.shape),
                                    dtype="uint8")
            arr[:] = idx
        out[s] = str(target)
    return out


def _write_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    from voxflow.core.atomic import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as bool


