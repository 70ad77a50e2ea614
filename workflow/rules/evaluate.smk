# Metrics (in native space and on the stores' grid, STORE_SPACE) and their cohort aggregation with
# dask (voxflow.evaluation.evaluate, voxflow.core.metrics). One evaluate job scores evaluate.subjects_per_job
# subjects: scoring takes about a second a subject, less than the job's own start-up (imports,
# cluster scheduling), and at 10 000 subjects one job per subject added 2000 jobs to the DAG
# (bench/dag.py).
from voxflow.evaluation.evaluate import chunk_id

EVAL_CFG = SETTINGS.section("evaluate") | {"label_values": INP["label_values"], "store_space": STORE_SPACE}
EVALUATE = SETTINGS.evaluate
# Consecutive runs of the predicted subjects (chunk_id: voxflow.evaluation.evaluate); a chunk's params list its subjects, so a
# chunk whose membership changes is scored again.
_PER_JOB = SETTINGS.eval_subjects_per_job


def eval_chunks():
    """chunk id -> its subjects (after the checkpoint cohort_status: the predicted subjects are known then)."""
    subjects = predict_subjects() if EVALUATE else []
    return {chunk_id(i // _PER_JOB): subjects[i : i + _PER_JOB] for i in range(0, len(subjects), _PER_JOB)}


@job_function
def eval_inputs(wildcards):
    files = {}
    for s in eval_chunks()[wildcards.chunk]:
        files[f"native_{s}"] = LAYOUT.prediction(s)
        files[f"{STORE_SPACE}_{s}"] = LAYOUT.prediction(s, STORE_SPACE)
        files[f"store_{s}"] = store_input(s)
    return files


@job_function
def eval_chunk_tables(wildcards):
    return [LAYOUT.evaluation_chunk(c) for c in eval_chunks()]


rule evaluate:
    input:
        unpack(eval_inputs),
    output:
        metrics=LAYOUT.evaluation_chunk(),
    log:
        LAYOUT.log("evaluate", "{chunk}"),
    benchmark:
        LAYOUT.benchmark("evaluate", "{chunk}")
    wildcard_constraints:
        chunk=r"\d+",
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=mem_mb("light"),
        runtime=runtime_min("light"),
    params:
        **step_params(lambda w: EVAL_CFG | {"labels_by_subject": {s: COHORT.labels[s] for s in eval_chunks()[w.chunk]}}),
    shell:
        step_cmd("evaluate", subject="chunk{wildcards.chunk}")


rule aggregate:
    input:
        # positional, and the step rebuilds the paths from the pattern and the chunk count: named inputs
        # travel in --io, and with subjects_per_job 1 the 10 000 paths would overflow Linux's 128 KiB
        # limit on one command-line argument
        eval_chunk_tables,
    output:
        metrics=LAYOUT.metrics,
        summary=report(LAYOUT.summary, caption="../report/summary.rst", category="Evaluation"),
    log:
        LAYOUT.log("aggregate", "aggregate"),
    benchmark:
        LAYOUT.benchmark("aggregate", "aggregate")
    conda:
        CONDA_ENV
    threads: 2
    resources:
        mem_mb=mem_mb("light"),
        runtime=runtime_min("light"),
    params:
        **step_params(
            lambda w: {
                "scheduler": SETTINGS.dask_scheduler,
                "table_pattern": LAYOUT.evaluation_chunk(),
                "n_chunks": len(eval_chunks()),
            }
        ),
    shell:
        step_cmd("aggregate", subject="cohort")
