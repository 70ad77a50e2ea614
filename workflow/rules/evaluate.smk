# Metrics (native and MNI space) and their cohort aggregation with dask (voxflow.evaluate,
# voxflow.metrics). One evaluate job scores evaluate.subjects_per_job subjects: scoring takes about
# a second a subject, less than the job's own start-up (imports, cluster scheduling), and at
# 10 000 subjects one job per subject added 2000 jobs to the DAG (bench/dag.py).
EVAL_DIR = os.path.join(OUT, "evaluation")
EVAL_CFG = config["evaluate"] | {"label_values": INP["label_values"]}
EVALUATE = HAS_LABEL and (bool(PREDICT_MODEL) or config["train"]["epochs"] > 0)
# Consecutive runs of the (sorted) predicted subjects; a chunk's params list its subjects, so a
# chunk whose membership changes is scored again.
_PER_JOB = config["evaluate"]["subjects_per_job"]
EVAL_CHUNKS = {f"{i // _PER_JOB:04d}": PREDICT_SUBJECTS[i:i + _PER_JOB]
               for i in range(0, len(PREDICT_SUBJECTS), _PER_JOB)} if EVALUATE else {}


@job_function
def eval_inputs(wildcards):
    files = {}
    for s in EVAL_CHUNKS[wildcards.chunk]:
        files[f"native_{s}"] = os.path.join(PRED_DIR, s, f"{s}_seg.nii.gz")
        files[f"mni_{s}"] = os.path.join(PRED_DIR, s, f"{s}_seg_mni.nii.gz")
        files[f"store_{s}"] = os.path.join(OUT, "zarr", f"{s}.zarr")
    return files


rule evaluate:
    input:
        unpack(eval_inputs),
    output:
        metrics=os.path.join(EVAL_DIR, "chunks", "{chunk}.tsv"),
    params:
        io=io_params(lambda w: EVAL_CFG | {"labels_by_subject": {s: COHORT.labels[s] for s in EVAL_CHUNKS[w.chunk]}}),
    log:
        os.path.join(OUT, "logs", "evaluate", "{chunk}.log"),
    benchmark:
        os.path.join(OUT, "benchmarks", "evaluate", "{chunk}.tsv")
    wildcard_constraints:
        chunk=r"\d+",
    threads: 1
    resources:
        mem_mb=mem_mb("light"),
        runtime=runtime_min("light"),
    conda:
        CONDA_ENV
    shell:
        step_cmd("evaluate", subject="chunk{wildcards.chunk}")


rule aggregate:
    input:
        tables=[os.path.join(EVAL_DIR, "chunks", f"{c}.tsv") for c in EVAL_CHUNKS],
    output:
        metrics=os.path.join(EVAL_DIR, "metrics.tsv"),
        summary=report(os.path.join(EVAL_DIR, "summary.tsv"), caption="../report/summary.rst", category="Evaluation"),
    params:
        io=io_params({"scheduler": config["dask"]["scheduler"]}),
    log:
        os.path.join(OUT, "logs", "aggregate", "aggregate.log"),
    benchmark:
        os.path.join(OUT, "benchmarks", "aggregate", "aggregate.tsv")
    threads: 2
    resources:
        mem_mb=mem_mb("light"),
        runtime=runtime_min("light"),
    conda:
        CONDA_ENV
    shell:
        step_cmd("aggregate", subject="cohort")
