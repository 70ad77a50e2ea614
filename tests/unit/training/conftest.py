"""Fixtures of the learning-stage tests (test_learn_pipeline, test_learn_cascade, test_learn_regions): a full config
and three tiny synthetic stores, one of each per test module."""

from __future__ import annotations

import pytest

from support.learning import MODS, synthetic_label, write_store
from support.paths import SCHEMA


@pytest.fixture(scope="module")
def base_cfg(tmp_path_factory):
    """A full config with the schema's defaults (as the Snakefile sees it), small training settings."""
    from voxflow.settings import validate_config

    cfg = validate_config({"output_dir": str(tmp_path_factory.mktemp("cfg")),
                           "input": {"layout": "demo", "modalities": MODS}}, SCHEMA)
    cfg["model"].update(base_features=4, patch_size=[32, 16, 16], batch_size=2)
    cfg["train"].update(device="cpu", epochs=2, iters_per_epoch=3, val_patches=2, workers=0,
                        checkpoint_every=1, threads=1)
    cfg["infer"].update(device="cpu", tta=False, overlap=0.25)
    return cfg


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("stores")
    return {f"s{i}": str(write_store(d / f"s{i}.zarr", synthetic_label(seed=i), seed=i)) for i in range(3)}
