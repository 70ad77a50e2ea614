"""Completing a subject: its missing modalities synthesized into a copy of its store (rule complete_subject).

The preprocessed store of a subject that lacks a modality (voxflow.inputs.missing) holds zeros in that channel and names
it in its attrs (`missing_modalities`). Here the cohort's synthesis model fills those channels from the others, in
a new store (completed/<subject>.zarr, written atomically; the original store is left as preprocessing wrote it)
whose attrs say which channels are synthetic, with which model and why they were missing. Inference reads that
store; the prediction's JSON and the report carry the marks.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from voxflow.inputs.images import InputError

def complete_store(subject: str, store: str, generator_path: str, out_store: str, out_png: str | None = None,
                   missing: Mapping[str, str] | None = None, zarr_cfg: Mapping | None = None,
                   device=None) -> dict:
    """Fill the store's missing channels with the synthesis model's output; write the completed store (and its QC
    figure: every modality, the synthetic ones marked). Returns the synthetic modalities and their marks."""
    import torch

    from voxflow.preprocess.store import write_store_like
    from voxflow.core.stores import read_subject_store
    from voxflow.synth.infer import synthesize
    from voxflow.synth.model import load_generator

    data = read_subject_store(store)
    meta = data["meta"]
    mods = list(meta["modalities"])
    gone = dict(meta.get("missing_modalities") or missing or {})
    if not gone:
        raise InputError(subject, store, "store has no missing modality to synthesize")
    device = device or torch.device("cpu")
    generator, gmeta = load_generator(generator_path, device)
    if list(gmeta["modalities"]) != mods:
        raise InputError(subject, generator_path, f"synthesis model was trained on modalities {gmeta['modalities']}, "
                                                  f"the store has {mods}")
    mask = data["mask"] > 0
    image = data["image"].astype(np.float32)
    filled = synthesize(image, [m not in gone for m in mods], generator, gmeta, device=device, mask=mask)
    marks = {m: {"why": why, "model": str(Path(generator_path))} for m, why in gone.items()}
    storage = {k: v for k, v in (zarr_cfg or {}).items() if k in ("chunk", "compressor", "clevel", "fg_samples")}
    write_store_like(data, filled, out_store, extra_attrs={"synthetic_modalities": marks},
                     drop_attrs=("missing_modalities",), **storage)
    if out_png:
        from voxflow.synth.metrics import synthesis_figure

        synthesis_figure({m: filled[i] * mask for i, m in enumerate(mods)}, list(gone), out_png,
                         title=f"{subject}: {', '.join(gone)} synthesized ({'; '.join(set(gone.values()))})")
    return {"synthetic_modalities": marks}


def synthetic_modalities(store: str) -> dict:
    """The store's synthetic modalities -> {why, model} ({} for a store of real images only)."""
    from voxflow.core.stores import store_meta

    return dict(store_meta(store).get("synthetic_modalities") or {})


def complete_subject(subject: str, inp: dict, out: dict, cfg: dict, threads: int = 1) -> dict:
    """The rule complete_subject: the subject's store completed with the synthesis model."""
    import torch

    from voxflow.nn.checkpoints import pick_device
    from voxflow.core.stores import store_path

    torch.set_num_threads(max(1, threads))
    return complete_store(subject, store_path(inp["store"]), inp["generator"], out["zarr"], out.get("qc"),
                          cfg.get("missing"), cfg.get("zarr"), pick_device(cfg.get("device", "auto")))


def train_synthesis(subject: str, inp: dict, out: dict, cfg: dict, threads: int = 1) -> dict:
    """The rule train_synthesis: the synthesis model on the complete training subjects' stores (model/stores.json;
    the subjects that lack a modality are test subjects, never in it)."""
    import json

    import torch

    from voxflow.synth.train import train_synthesis as train

    torch.set_num_threads(max(1, threads))
    stores = json.loads(Path(inp["stores"]).read_text())
    if not stores:
        raise InputError("cohort", inp["stores"], "no complete training subject to train the synthesis model on")
    settings = {k: v for k, v in cfg.items() if k not in ("modalities", "threads")}
    return train([stores[s] for s in sorted(stores)], settings, Path(out["generator"]).parent, progress=True)
