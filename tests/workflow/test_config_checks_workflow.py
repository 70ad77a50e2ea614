"""Config mistakes through the workflow: for a representative subset of the catalogue (support/config_cases.py;
`voxflow validate` on every case: tests/unit/settings/test_config_checks.py) the same one-line messages from
`snakemake -n` (the Snakefile runs the same checks, common.smk), without a traceback; subject IDs with unicode
letters, `+` and `.` are accepted by both."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from support.config_cases import CASES, GOOD, folders_config, validate_lines, write_config, write_folders
from support.paths import PROJECT, VENV_BIN


def _snakemake(path: Path) -> subprocess.CompletedProcess:
    """`snakemake -n --cores 1 --configfile PATH` from the project folder, as a user runs it."""
    env = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run([str(VENV_BIN / "snakemake"), "-n", "--cores", "1", "--configfile", str(path)],
                          cwd=PROJECT, env=env, capture_output=True, text=True, encoding="utf-8", timeout=300,
                          check=False)


# the same line from the workflow, before any job: a representative subset (a dry run takes seconds)
WORKFLOW_CASES = ["ids_input_subjects", "ids_folders", "ids_sheet", "test_subjects_missing",
                  "fewer_training_than_folds", "output_inside_root", "model_dir_other_modalities", "several_at_once",
                  "modality_in_no_subject"]


@pytest.mark.parametrize("case", WORKFLOW_CASES)
def test_workflow_fails_with_the_same_lines(case, tmp_path):
    cfg, expected = CASES[case](tmp_path)
    res = _snakemake(write_config(tmp_path, cfg))
    text = res.stdout + res.stderr
    assert res.returncode != 0, text
    assert "Traceback" not in text and "Building DAG" not in text, text
    lines = text.splitlines()
    start = lines.index(expected[0])  # the lines come together, in check_config's order
    assert lines[start:start + len(expected)] == expected, text


# --- accepted IDs -----------------------------------------------------------------------------------------------------

# the last one: é decomposed (e + combining acute), as folder names written on macOS are
ACCEPTED = ["sujet-é01", "pat+1.v2", "_x", "P_007-b", "sujet-e\u030102"]


def test_unicode_plus_and_dot_ids_are_accepted(tmp_path, capsys):
    from voxflow.inputs.cohort import subject_id_ok

    assert all(subject_id_ok(s) for s in ACCEPTED)
    write_folders(tmp_path / "data", ACCEPTED + GOOD[:3])
    path = write_config(tmp_path, folders_config(tmp_path))
    rc, lines = validate_lines(path, capsys)
    assert (rc, lines) == (0, [])
    res = _snakemake(path)
    text = res.stdout + res.stderr
    assert res.returncode == 0, text
    assert "config error" not in text and "Traceback" not in text, text
    for s in ACCEPTED:  # each subject's preprocessing job is in the DAG
        assert f"subject={s}" in text, s
