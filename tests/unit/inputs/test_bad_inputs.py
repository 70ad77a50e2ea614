"""Bad-input catalogue (support/bad_inputs.py): every kind of broken input in one sample-sheet cohort, one broken
subject per kind beside two good ones. Per kind: `voxflow validate` reports exactly one row naming the subject,
the file and the problem (the same text fails that subject's ingest under `snakemake --keep-going`:
tests/workflow/test_bad_inputs_workflow.py). The `cohort` and `validated` fixtures are tests/conftest.py's.
"""

from __future__ import annotations

import re

import pytest

from support.bad_inputs import GOOD, HEADER_KINDS, KINDS
from support.paths import VENV_BIN


def test_catalogue_has_enough_kinds():
    assert len(KINDS) >= 12


@pytest.mark.parametrize("kind", list(KINDS))
def test_validate_reports_one_row(kind, cohort, validated):
    rc, rows, text = validated["full"]
    assert rc == 1
    mine = [r for r in rows if r[0] == kind]
    assert len(mine) == 1, f"{kind}: {mine}"
    file, problem = cohort["expected"][kind]
    assert mine[0][1] == file
    assert re.search(problem, mine[0][2]), f"{kind}: {mine[0][2]!r} does not match {problem!r}"
    assert f"{kind}  " in text and mine[0][2] in text  # the printed table holds the row
    # header-level kinds are found, with the same message, by the fast pass that reads no voxels
    _, header_rows, _ = validated["headers"]
    if kind in HEADER_KINDS:
        assert [r for r in header_rows if r[0] == kind] == mine
    else:
        assert not [r for r in header_rows if r[0] == kind], "a voxel-level kind found from the header alone?"


def test_validate_good_subjects_and_summary(cohort, validated):
    _rc, rows, text = validated["full"]
    assert not [r for r in rows if r[0] in GOOD]
    assert {r[0] for r in rows} == set(KINDS)
    n = len(GOOD) + len(KINDS)
    assert re.search(rf"voxflow validate: {len(KINDS)} of {n} subjects have problems \({len(KINDS)} problems; "
                     r"headers and voxels\) in [\d.]+ s", text), text


def test_validate_cli_exit_code_zero_when_clean(cohort, tmp_path):
    """A clean cohort (the two good subjects): exit 0, empty TSV, run as a user runs it (console script)."""
    import subprocess

    import yaml

    cfg = dict(cohort["cfg"], input=dict(cohort["cfg"]["input"], subjects=GOOD))
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = subprocess.run([str(VENV_BIN / "voxflow"), "validate", str(path), "--out", str(tmp_path / "p.tsv")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.startswith("voxflow validate: all 2 subjects OK (headers and voxels)")
    assert (tmp_path / "p.tsv").read_text() == "subject\tfile\tproblem\tseverity\n"
