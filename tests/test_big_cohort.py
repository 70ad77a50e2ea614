"""Big cohorts: no job's command line grows with the cohort. Linux refuses one argument over 128 KiB
(E2BIG at exec), and a dry run does not exec anything, so the cohort-level jobs are run for real on a
sheet of 4000 subjects with long IDs (4000 x ~45 characters = ~180 KiB of IDs)."""

from __future__ import annotations

import json
import re

from test_preprocess_workflow import _fail_msg, run_snakemake
from voxflow.config import shorten_lists

ARG_MAX_ONE = 128 * 1024  # MAX_ARG_STRLEN


def _sheet(tmp_path, n: int) -> tuple[list[str], str]:
    ids = [f"site-{i % 7:02d}-patient-{i:06d}-session-baseline-01" for i in range(n)]
    lines = ["subject\tt1\tt2\tseg"] + [f"{s}\t{s}/t1.nii.gz\t{s}/t2.nii.gz\t{s}/seg.nii.gz" for s in ids]
    (tmp_path / "data").mkdir()
    sheet = tmp_path / "data" / "cohort.tsv"
    sheet.write_text("\n".join(lines) + "\n")
    return ids, str(sheet)


def test_split_of_a_big_cohort_runs_with_a_short_command(tmp_path):
    ids, sheet = _sheet(tmp_path, 4000)
    assert sum(len(s) + 4 for s in ids) > ARG_MAX_ONE  # the IDs alone would not fit in one argument
    out = tmp_path / "results"
    cfg = {"output_dir": str(out), "input": {"layout": "sheet", "sheet": sheet, "modalities": ["t1", "t2"],
                                             "label": "seg"}}
    target = str(out / "model" / "split.json")
    dry = run_snakemake(tmp_path, cfg, [target], "-n", "-p")
    assert dry.returncode == 0, _fail_msg(dry)
    cmds = [ln for ln in (dry.stdout + dry.stderr).splitlines() if "voxflow step split" in ln]
    assert cmds and max(len(c.encode()) for c in cmds) < 4096, cmds
    res = run_snakemake(tmp_path, cfg, [target])
    assert res.returncode == 0, _fail_msg(res)
    split = json.loads((out / "model" / "split.json").read_text())
    held = set(split["test"]) | {s for f in split["folds"] for s in f["val"]}
    assert held == set(ids) and len(split["test"]) > 0  # every subject: test or exactly one validation fold
    assert json.loads((out / "model" / "subjects.json").read_text()) == ids
    # the subject list is rewritten only when the cohort changes: a second run has nothing to do
    again = run_snakemake(tmp_path, cfg, [target])
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr, _fail_msg(again)


def test_report_and_config_lists_are_shortened():
    ids = [f"s{i}" for i in range(10_000)]
    cfg = {"input": {"subjects": ids, "modalities": ["t1", "t2"]}, "split": {"test_subjects": ids[:60]}}
    short = shorten_lists(cfg)
    assert short["input"]["modalities"] == ["t1", "t2"]
    assert short["input"]["subjects"] == "[10000 items: s0, s1, s2, ...]"
    assert re.match(r"\[60 items: ", short["split"]["test_subjects"])
    assert len(json.dumps(short)) < 200 and cfg["input"]["subjects"] is ids  # a copy; the config is untouched
