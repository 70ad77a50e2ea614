"""Bad-input catalogue through the workflow (the catalogue: support/bad_inputs.py; `voxflow validate` on it:
tests/unit/inputs/test_bad_inputs.py): under `snakemake --keep-going` each broken subject's ingest fails with the
text `voxflow validate` reports for it, as a one-line error, while the good subjects are ingested (one run for
the whole catalogue, asking for ingest only: the rest of the chain is the same for every subject that passes it,
and test_preprocess_workflow runs it under --keep-going through the zarr stores).

Config-level problems (duplicated subject IDs, an invalid key or value) stop the whole run by design, with one
line naming the key: `test_config_level_errors_stop_the_run`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from support.bad_inputs import GOOD, KINDS, LABEL_VALUES, MODS
from support.outputs import tmp_names_under
from support.workflow import fail_msg, run_snakemake


@pytest.fixture(scope="module")
def workflow_run(cohort):
    """One `snakemake --keep-going` run asking for every subject's ingested files and the cohort table."""
    out = Path(cohort["cfg"]["output_dir"])
    subjects = [*GOOD, *KINDS]
    targets = [str(out / "preprocess" / s / "ingest" / "info.json") for s in subjects]
    targets.append(str(out / "validation" / "problems.tsv"))
    res = run_snakemake(cohort["work"], cohort["cfg"], targets, "--keep-going")
    errors = [ln.strip() for ln in (res.stdout + res.stderr).splitlines() if "voxflow ERROR" in ln]
    return dict(res=res, out=out, errors=errors)


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KINDS))
def test_workflow_fails_only_that_subject(kind, cohort, validated, workflow_run):
    res, out, errors = workflow_run["res"], workflow_run["out"], workflow_run["errors"]
    file, _ = cohort["expected"][kind]
    (row,) = [r for r in validated["full"][1] if r[0] == kind]
    line = f"voxflow ERROR [ingest] subject={kind} file={file}: {row[2]}"
    mine = [ln for ln in errors if f"subject={kind} " in ln]
    assert mine and set(mine) == {line}, f"{kind}: {mine}\n{fail_msg(res)}"
    log = (out / "logs" / "ingest" / f"{kind}.log").read_text().strip().splitlines()
    assert log[-1] == line  # the same line closes the job's log
    assert not (out / "preprocess" / kind).exists() or not list((out / "preprocess" / kind).rglob("*"))


@pytest.mark.slow
def test_workflow_good_subjects_complete_and_table_matches(cohort, validated, workflow_run):
    res, out, errors = workflow_run["res"], workflow_run["out"], workflow_run["errors"]
    assert res.returncode != 0, fail_msg(res)
    for s in GOOD:
        ingest = out / "preprocess" / s / "ingest"
        assert sorted(json.loads((ingest / "info.json").read_text())["modalities"]) == sorted(MODS), fail_msg(res)
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(ingest / "label.nii.gz")))
        assert set(np.unique(label)) <= set(LABEL_VALUES) and (label > 0).sum() > 20
        assert np.ptp(sitk.GetArrayFromImage(sitk.ReadImage(str(ingest / "t1.nii")))) > 0
    assert not [ln for ln in errors if "subject=good" in ln]
    assert {re.search(r"subject=(\S+) ", ln).group(1) for ln in errors} == set(KINDS)
    # the cohort table of the workflow is `voxflow validate`'s table; its text went to the console
    lines = (out / "validation" / "problems.tsv").read_text().splitlines()
    assert [tuple(ln.split("\t")) for ln in lines[1:]] == validated["full"][1]
    text = (out / "validation" / "problems.txt").read_text()
    assert text.splitlines()[-1] in res.stderr
    assert tmp_names_under(out) == [] and tmp_names_under(cohort["data"]) == []
    # the file outside the data root was never read: no job log names it
    assert not [p for p in (out / "logs").rglob("*.log") if "outside/t1.nii.gz" in p.read_text()
                and "path escapes" not in p.read_text()]


def test_config_level_errors_stop_the_run(tmp_path, capsys):
    """Duplicated subject IDs or a bad config value are the config's problem: `voxflow validate` exits 2
    and Snakemake builds no DAG, with one line naming the key (and the allowed values)."""
    import yaml

    from voxflow.cli import main

    data = tmp_path / "data"
    data.mkdir()
    sheet = data / "cohort.csv"
    sheet.write_text("subject,t1\ns1,s1/t1.nii.gz\ns2,s2/t1.nii.gz\ns1,s1b/t1.nii.gz\n")
    dup = {"input": {"layout": "sheet", "sheet": str(sheet), "modalities": ["t1"], "label": None}}
    bad_value = {"input": {"layout": "folders", "root": str(data)}, "preprocess": {"skullstrip": {"method": "bet"}}}
    cases = [(dup, f"config error at 'input.sheet': duplicated subject IDs in {sheet}: s1 (lines 2, 4)"),
             (bad_value, "config error at 'preprocess.skullstrip.method': 'bet' is not allowed; allowed values: "
                         "['deepbet', 'template', 'none']")]
    for cfg, message in cases:
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(cfg))
        assert main(["validate", str(path), "--base-config", ""]) == 2
        err = capsys.readouterr().err
        assert f"voxflow ERROR [config] {message}\n" in err, err
        res = run_snakemake(tmp_path, cfg, [], "-n")
        assert res.returncode != 0 and message in res.stdout + res.stderr, fail_msg(res)
        assert "localrule" not in res.stdout + res.stderr and "rule validate" not in res.stdout + res.stderr
