"""The config resolved once: every derived value (the chain's steps, the normalization method of each
modality, which modality is CT, one job per subject or per step, training or predicting) computed here
from the validated config and read by the rules, the steps and `voxflow validate` (nnU-Net's plans /
configuration manager is the model).

One loader (voxflow.settings.loader): `load(configfile)` reads the YAML over config/config.yaml as the Snakefile
does, `load_config_dict(config)` takes the dict Snakemake merged; both validate against the packaged schema
(voxflow.settings.schema), build the cohort, run the cross-field checks (voxflow.settings.checks) and resolve
the Settings (voxflow.settings.model), returned together as a `Loaded`."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from voxflow.settings.checks import check_config
    from voxflow.settings.loader import Loaded, build_cohort, load, load_config_dict, resolve
    from voxflow.settings.model import ChainSettings, Settings
    from voxflow.settings.schema import validate_config

__all__ = ["ChainSettings", "Loaded", "Settings", "build_cohort", "check_config", "load", "load_config_dict",
           "resolve", "validate_config"]

# Imported when asked for: a preprocessing step that needs only voxflow.settings.model (which modality is CT)
# must not pay for the loader's YAML, schema and checks, and a model archive opens with the standard library.
_WHERE = {"check_config": "checks", "Loaded": "loader", "build_cohort": "loader", "load": "loader",
          "load_config_dict": "loader", "resolve": "loader", "ChainSettings": "model", "Settings": "model",
          "validate_config": "schema"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"voxflow.settings.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'voxflow.settings' has no attribute {name!r}")
