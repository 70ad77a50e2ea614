"""CT config mistakes found at load time (voxflow.settings.checks.ct_problems), each named by its key (the same
mistake stopping the workflow before any job: tests/workflow/test_ct_workflow.py)."""

from __future__ import annotations

import pytest

from support.paths import SCHEMA


@pytest.mark.parametrize("pre,key", [
    ({"normalize": {"method": "ct_window"}, "skullstrip": {"method": "none"}, "space": "native"},
     "preprocess.normalize.window"),
    ({"skullstrip": {"method": "deepbet"}, "space": "native"}, "preprocess.skullstrip.method"),
    ({"skullstrip": {"method": "none"}}, "preprocess.space"),  # a CT body cannot go to the MNI brain
    ({"skullstrip": {"method": "none"}, "space": "native", "normalize": {"method": "ct_dataset"}}, None),
])
def test_ct_config_mistakes_are_named(pre, key):
    from voxflow.settings import validate_config
    from voxflow.settings.checks import ct_problems

    cfg = validate_config({"input": {"layout": "folders", "root": "x", "modalities": ["ct"],
                                     "modality_types": {"ct": "ct"}}, "preprocess": pre}, SCHEMA)
    problems = ct_problems(cfg)
    assert problems == ([] if key is None else [p for p in problems if f"config error at '{key}'" in p]) and \
        len(problems) == (key is not None)
