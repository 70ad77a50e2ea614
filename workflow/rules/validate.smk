# Validation (voxflow.inputs.validate): each subject's raw files pass ingest's own checks before ingest runs (the
# chain's first step, workflow/rules/preprocess.smk). The validate job succeeds whatever it finds and writes its problems (an empty table = clean);
# ingest then fails with the table's first row. So under --keep-going a broken subject stops at its
# ingest with one line while every other subject runs on, and the cohort table
# (validation/problems.tsv, printed to the console as text) lists every problem of every subject.
# A cohort rule that failed on a broken subject would block the whole run instead.

PROBLEMS = {"table": LAYOUT.problems_table, "text": LAYOUT.problems_text}


if not FUSED:

    rule validation_table:
        """The cohort's problems in one table. `run:` rather than `voxflow step`: the 10 000 table paths
        would not fit in one command-line argument."""
        input:
            tables=expand(LAYOUT.validation_table(), subject=SUBJECTS),
        output:
            **PROBLEMS,
        priority: 10
        localrule: True
        run:
            merge_validation(list(input.tables))


def merge_validation(tables, missing_ok=False):
    """The cohort table from the per-subject tables, printed."""
    import sys

    from voxflow.inputs.validate import merge_tables

    print(merge_tables(tables, PROBLEMS["table"], PROBLEMS["text"], missing_ok=missing_ok), file=sys.stderr)


def merge_validation_at_exit(log):
    """One job per subject (FUSED): the chain writes each subject's table as a plain file, not a declared
    output, so that a failed subject's table survives its job (Snakemake deletes the outputs of a failed
    job) and the DAG has 10 000 files fewer. The cohort table is merged when the run ends, failed or not,
    if a subject's table is newer (a run that preprocessed no subject leaves it alone)."""
    if not FUSED:
        return
    from voxflow.inputs.validate import tables_changed

    tables = [LAYOUT.validation_table(s) for s in SUBJECTS]
    if tables_changed(tables, PROBLEMS["table"]):
        merge_validation(tables, missing_ok=True)


def exclusions_at_exit():
    """The run's final summary names the excluded subjects, their failing step and reason (status/cohort.json)."""
    if os.path.exists(LAYOUT.cohort_status):
        from voxflow.pipeline.status import exclusion_summary

        text = exclusion_summary(json.loads(open(LAYOUT.cohort_status).read()))
        if text:
            print(text, file=sys.stderr)


onsuccess:
    merge_validation_at_exit(log)
    exclusions_at_exit()


onerror:
    merge_validation_at_exit(log)
    exclusions_at_exit()
