"""The config resolved once: every derived value (the chain's steps, the normalization method of each
modality, which modality is CT, one job per subject or per step, training or predicting) computed here
from the validated config and read by the rules, the steps and `voxflow validate` (nnU-Net's plans /
configuration manager is the model). The cross-field checks live in `voxflow.settings.checks`."""

from __future__ import annotations

from voxflow.inputs.cohort import Cohort
from voxflow.settings.checks import check_config
from voxflow.settings.model import ChainSettings, Settings


def resolve(config: dict, cohort: Cohort) -> Settings:
    """The validated config (voxflow.settings.load.validate_config) checked across its fields against the cohort
    (ConfigError listing every mistake), then resolved into its typed Settings."""
    check_config(config, cohort)
    return Settings.from_config(config, cohort)


__all__ = ["ChainSettings", "Settings", "check_config", "resolve"]
