"""Big cohorts without the workflow (the workflow's runs: tests/workflow/test_big_cohort.py): the report's config
shortens its subject lists only, and the merged validation table is rewritten only after new subject tables."""

from __future__ import annotations

import json
import re

from voxflow.settings.loader import shorten_subject_lists


def test_report_config_shortens_subject_lists_only():
    ids = [f"s{i}" for i in range(10_000)]
    labels = list(range(60))  # a label list is a value the report computes with: kept whole
    cfg = {"input": {"subjects": ids, "modalities": ["t1", "t2"], "label_values": labels},
           "split": {"test_subjects": ids[:60]}}
    short = shorten_subject_lists(cfg)
    assert short["input"]["modalities"] == ["t1", "t2"] and short["input"]["label_values"] == labels
    assert short["input"]["subjects"] == "[10000 subjects: s0, s1, s2, ...]"
    assert re.match(r"\[60 subjects: ", short["split"]["test_subjects"])
    assert len(json.dumps(short)) < 400 and cfg["input"]["subjects"] is ids  # a copy; the config is untouched


def test_merged_validation_table_is_rewritten_only_after_new_subject_tables(tmp_path):
    import os

    from voxflow.inputs.validate import merge_tables, tables_changed, write_table

    tables = [str(tmp_path / f"s{i}.tsv") for i in range(3)]
    merged = str(tmp_path / "problems.tsv")
    assert not tables_changed(tables, merged)  # nothing checked yet: no "0 of 0 subjects" table
    write_table([("s0", "t1.nii.gz", "t1 image file is empty")], tables[0])
    assert tables_changed(tables, merged)
    text = merge_tables(tables, merged, str(tmp_path / "problems.txt"), missing_ok=True)
    assert "1 of 1 subjects have problems" in text and "2 subjects not checked" in text
    assert not tables_changed(tables, merged)
    write_table([], tables[1])
    os.utime(tables[1], ns=(os.stat(merged).st_mtime_ns + 10**9,) * 2)
    assert tables_changed(tables, merged)
