"""Subjects' status files: each subject included (with its store) or excluded (with the step, file and
one-line problem that left it out), merged into the cohort's status/cohort.json that the split reads."""

from __future__ import annotations

import json
from pathlib import Path

from voxflow.core.atomic import write_json_atomic


def subject_lists(inp: dict, cfg: dict) -> dict:
    """{"subjects": [...], ...}: the rule's `subjects` file (written by a localrule, because subject lists
    overflow the command line of big cohorts), or the config itself when a caller passes them there."""
    return json.loads(Path(inp["subjects"]).read_text()) if inp.get("subjects") else cfg


def validation_rows(table: str | None) -> list[tuple]:
    """A subject's validation table as (file, problem, severity) rows; none when there is no table."""
    from voxflow.inputs.validate import read_table

    if not table or not Path(table).exists():
        return []
    return [(r[1], r[2], r[3] if len(r) > 3 else "error") for r in read_table(table)]


def write_status(path: str, subject: str, store: str | None = None, validation: str | None = None,
                 failure: dict | None = None) -> dict:
    """status/subjects/<subject>.json: `ok` with the store, or `excluded` with the step that failed, the file and the
    one-line problem; with the validation warnings either way (a valid but suspicious scan)."""
    warnings = [[f, p] for f, p, sev in validation_rows(validation) if sev == "warning"]
    status = ({"subject": subject, "status": "excluded", "store": None, **failure} if failure
              else {"subject": subject, "status": "ok", "store": str(store)})
    status["warnings"] = warnings
    write_json_atomic(status, path)
    return status


def merge_status(paths: list[str], out: str, test_subjects: list[str] | None = None,
                 incomplete: dict[str, dict[str, str]] | None = None) -> dict:
    """status/cohort.json from every subject's status: `subjects` (included, sorted: the split does not depend
    on the order of a sheet), `test_subjects` (split.test_subjects that were not excluded), `excluded` and
    `warnings` (subject, file, problem), `incomplete` (input.missing: synthesize: the included subjects that lack
    a modality -> {modality: why}; never trained on). Also the input of the split."""
    included, excluded, warnings = [], [], []
    for p in paths:
        st = json.loads(Path(p).read_text())
        if st["status"] == "ok":
            included.append(st["subject"])
        else:
            excluded.append({k: st.get(k) for k in ("subject", "step", "file", "problem")})
        warnings += [{"subject": st["subject"], "file": f, "problem": w} for f, w in st.get("warnings") or []]
    kept = set(included)
    cohort = {"subjects": sorted(included),
              "test_subjects": sorted(s for s in test_subjects if s in kept) if test_subjects else None,
              "excluded": sorted(excluded, key=lambda e: e["subject"]), "warnings": warnings,
              "incomplete": {s: dict(m) for s, m in sorted((incomplete or {}).items()) if s in kept}}
    write_json_atomic(cohort, out)
    return cohort


def exclusion_summary(cohort: dict, limit: int = 20) -> str:
    """The run's closing lines about excluded subjects (empty when none was)."""
    ex = cohort.get("excluded") or []
    if not ex:
        return ""
    n = len(ex) + len(cohort.get("subjects") or [])
    lines = [f"voxflow: {len(ex)} of {n} subjects excluded (input.on_error: exclude); the rest ran without them:"]
    lines += [f"  {e['subject']}  [{e['step']}]  {e['file']}: {e['problem']}" for e in ex[:limit]]
    if len(ex) > limit:
        lines.append(f"  ... and {len(ex) - limit} more (status/cohort.json)")
    return "\n".join(lines)
