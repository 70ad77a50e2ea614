"""The one Snakemake internal voxflow relies on, pinned by a test that fails loudly when an upgrade changes it.

workflow/rules/common.smk `job_function` hands Snakemake the parameters of every function it calls per job
(input, params, resources) through `snakemake.common.overwrite_function_params`: without it Snakemake runs
inspect.signature on every call, ~65 000 times per 3000 subjects, about a tenth of the dry run (bench/dag.py).
There is no public mechanism for this; if Snakemake stops reading the hook, the DAG gets slower, not wrong, so
only this test would notice.
"""

from __future__ import annotations

import inspect

import pytest

from support.paths import PROJECT as ROOT


def test_overwritten_params_are_what_snakemake_reads_for_job_functions():
    common = pytest.importorskip("snakemake.common")
    rules = pytest.importorskip("snakemake.rules")

    def fn(wildcards, attempt, input=None):
        return attempt

    def only_wildcards(wildcards):
        return wildcards

    # what job_function does: the parameters, read once (here deliberately those of another function, so that
    # the test sees whether Snakemake reads the hook or inspects `fn` again)
    common.overwrite_function_params(fn, inspect.signature(only_wildcards).parameters)
    offered = {"wildcards": 1, "attempt": 2, "input": 3}
    assert dict(common.get_input_function_aux_params(fn, offered)) == {"wildcards": 1}, (
        "Snakemake no longer selects a job function's arguments from the parameters set by "
        "overwrite_function_params: workflow/rules/common.smk job_function has no effect any more")
    # the rules and resources evaluate their functions through that same selection
    assert rules.get_input_function_aux_params is common.get_input_function_aux_params
    assert pytest.importorskip("snakemake.resources").get_input_function_aux_params is \
        common.get_input_function_aux_params


def test_common_smk_uses_the_public_helper_not_the_attribute():
    text = (ROOT / "workflow" / "rules" / "common.smk").read_text()
    assert "overwrite_function_params(" in text and "._overwrite_params" not in text


def test_the_deployment_method_is_where_python_cmd_reads_it():
    """common.smk python_cmd reads `workflow.deployment_settings.deployment_method` to tell a `--sdm conda` run
    (the rule's environment's `python`) from a plain one (the interpreter running Snakemake)."""
    import dataclasses

    pytest.importorskip("snakemake")
    import snakemake.api  # noqa: F401  (imports snakemake.workflow in its own order: importing it first is circular)
    import snakemake.settings.types as types
    import snakemake.workflow as workflow

    fields = {f.name for f in dataclasses.fields(workflow.Workflow)}
    assert "deployment_settings" in fields, "snakemake.workflow.Workflow has no deployment_settings (python_cmd)"
    assert "deployment_method" in {f.name for f in dataclasses.fields(types.DeploymentSettings)}
    assert hasattr(types.DeploymentMethod, "CONDA")
    text = (ROOT / "workflow" / "rules" / "common.smk").read_text()
    assert 'getattr(workflow, "deployment_settings", None), "deployment_method"' in text
