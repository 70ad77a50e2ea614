"""Big cohorts: no job's command line grows with the cohort. Linux refuses one argument over 128 KiB
(E2BIG at exec), and a dry run does not exec anything, so the cohort-level jobs are run for real on a
sheet of 4000 subjects with long IDs (4000 x ~45 characters = ~180 KiB of IDs)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from support.workflow import fail_msg, preprocessed_placeholders, run_snakemake

ARG_MAX_ONE = 128 * 1024  # MAX_ARG_STRLEN


def _sheet(tmp_path, n: int) -> tuple[list[str], str]:
    ids = [f"site-{i % 7:02d}-patient-{i:06d}-session-baseline-01" for i in range(n)]
    lines = ["subject\tt1\tt2\tseg"] + [f"{s}\t{s}/t1.nii.gz\t{s}/t2.nii.gz\t{s}/seg.nii.gz" for s in ids]
    (tmp_path / "data").mkdir()
    for s in ids:  # placeholders: the config check samples the first subjects' files (voxflow.settings.checks)
        (tmp_path / "data" / s).mkdir()
        for name in ("t1", "t2", "seg"):
            (tmp_path / "data" / s / f"{name}.nii.gz").touch()
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
    assert dry.returncode == 0, fail_msg(dry)
    cmds = [ln for ln in (dry.stdout + dry.stderr).splitlines() if "voxflow step split" in ln]
    assert cmds and max(len(c.encode()) for c in cmds) < 4096, cmds
    # the preprocessing as done (placeholders), so that only the split is left to run
    preprocessed_placeholders(out, ids)
    res = run_snakemake(tmp_path, cfg, [target], "--rerun-triggers", "mtime", "--")
    assert res.returncode == 0, fail_msg(res)
    assert re.search(r"^split\s+1$", res.stdout + res.stderr, re.M) and "preprocess_subject" not in res.stdout
    split = json.loads((out / "model" / "split.json").read_text())
    held = set(split["test"]) | {s for f in split["folds"] for s in f["val"]}
    assert held == set(ids) and len(split["test"]) > 0  # every subject: test or exactly one validation fold
    assert split["excluded"] == []
    # the split does not depend on the order of the sheet's rows (which would retrain every fold): the run
    # after reversing the sheet has nothing to do
    lines = Path(sheet).read_text().splitlines()
    Path(sheet).write_text("\n".join(lines[:1] + lines[:0:-1]) + "\n")
    again = run_snakemake(tmp_path, cfg, [target], "--rerun-triggers", "mtime", "--")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr, fail_msg(again)


def test_no_cohort_rule_carries_subject_ids_on_its_command_line(tmp_path):
    """Every cohort-level command is the same length whatever the cohort: no subject ID in it (they come
    from files: the subject lists, the split, the stores manifest, path patterns)."""
    out = tmp_path / "results"
    cfg = {"output_dir": str(out), "input": {"layout": "demo", "modalities": ["t1", "t2"]}, "demo": {"n_subjects": 6},
           "split": {"n_folds": 2}, "preprocess": {"normalize": {"method": "nyul"}}}
    res = run_snakemake(tmp_path, cfg, [], "-n", "-p")
    assert res.returncode == 0, fail_msg(res)
    cohort_rules = ("split", "normalization_stats", "fingerprint", "plan", "train", "postprocess_plan", "aggregate",
                    "report")
    cmds = {r: [ln for ln in res.stdout.splitlines() if f"voxflow step {r} " in ln or f"-m voxflow.cli step {r} " in ln]
            for r in cohort_rules}
    assert all(cmds.values()), {r: len(c) for r, c in cmds.items()}
    for rule, lines in cmds.items():
        assert not [ln for ln in lines if re.search(r"demo00\d", ln)], (rule, lines[0][:3000])
