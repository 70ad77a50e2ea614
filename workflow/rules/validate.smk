# Validation (voxflow.validate): each subject's raw files pass ingest's own checks before ingest runs.
# The per-subject job succeeds whatever it finds and writes its problems (an empty table = clean);
# ingest then fails with the table's first row. So under --keep-going a broken subject stops at its
# ingest with one line while every other subject runs on, and the cohort table
# (validation/problems.tsv, printed to the console as text) lists every problem of every subject.
# A cohort rule that failed on a broken subject would block the whole run instead.

VALIDATION = os.path.join(OUT, "validation")
VALIDATION_TABLE = os.path.join(VALIDATION, "subjects", "{subject}.tsv")


@job_function
def raw_inputs(wildcards):
    """Only files that exist: a missing one must fail this subject's validation, not the whole DAG."""
    files = dict(COHORT.images[wildcards.subject])
    if HAS_LABEL:
        files["label"] = COHORT.labels[wildcards.subject]
    if INP["layout"] == "demo":
        return {k if k == "label" else f"img_{k}": v for k, v in files.items()}
    return {k if k == "label" else f"img_{k}": v for k, v in files.items() if v and os.path.exists(v)}


def validation_config(wildcards):
    s = wildcards.subject
    return {"images": COHORT.images[s], "label": COHORT.labels[s], "reference": REF,
            "label_values": INP["label_values"], "problem": COHORT.problems.get(s)}  # found at parse time


VALIDATE = StepIO("validate", input=raw_inputs, output={"table": VALIDATION_TABLE}, config=validation_config)


if not FUSED:
    rule validate:
        input:
            unpack(raw_inputs),
        output:
            **VALIDATE.output,
        params:
            **step_params(VALIDATE.config),
        log:
            log_path("validate"),
        benchmark:
            bench_path("validate")
        priority: 10  # every subject's check before the long per-subject chains: the table comes early
        threads: 1
        resources:
            mem_mb=mem_mb("light"),
            runtime=runtime_min("light"),
        conda:
            CONDA_ENV
        shell:
            step_cmd("validate")


PROBLEMS = {"table": os.path.join(VALIDATION, "problems.tsv"), "text": os.path.join(VALIDATION, "problems.txt")}


if not FUSED:
    rule validation_table:
        """The cohort's problems in one table. `run:` rather than `voxflow step`: the 10 000 table paths
        would not fit in one command-line argument."""
        input:
            tables=expand(VALIDATION_TABLE, subject=SUBJECTS),
        output:
            **PROBLEMS,
        priority: 10
        localrule: True
        run:
            merge_validation(list(input.tables))


def merge_validation(tables, missing_ok=False):
    """The cohort table from the per-subject tables, printed."""
    import sys

    from voxflow.validate import merge_tables

    print(merge_tables(tables, PROBLEMS["table"], PROBLEMS["text"], missing_ok=missing_ok), file=sys.stderr)


def merge_validation_at_exit(log):
    """One job per subject (FUSED): the chain writes each subject's table as a plain file, not a declared
    output, so that a failed subject's table survives its job (Snakemake deletes the outputs of a failed
    job) and the DAG has 10 000 files fewer. The cohort table is merged when the run ends, failed or not,
    if a subject's table is newer (a run that preprocessed no subject leaves it alone)."""
    if not FUSED:
        return
    from voxflow.validate import tables_changed

    tables = [VALIDATION_TABLE.replace("{subject}", s) for s in SUBJECTS]
    if tables_changed(tables, PROBLEMS["table"]):
        merge_validation(tables, missing_ok=True)


def exclusions_at_exit():
    """The run's final summary names the excluded subjects, their failing step and reason (status/cohort.json)."""
    if os.path.exists(COHORT_STATUS):
        from voxflow.steps import exclusion_summary

        text = exclusion_summary(json.loads(open(COHORT_STATUS).read()))
        if text:
            print(text, file=sys.stderr)


onsuccess:
    merge_validation_at_exit(log)
    exclusions_at_exit()


onerror:
    merge_validation_at_exit(log)
    exclusions_at_exit()
