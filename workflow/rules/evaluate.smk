# Metrics per subject (native and MNI space) and their cohort aggregation with dask
# (voxflow.evaluate, voxflow.metrics).
EVAL_DIR = os.path.join(OUT, "evaluation")
EVAL_CFG = config["evaluate"] | {"label_values": INP["label_values"]}
EVALUATE = HAS_LABEL and (bool(PREDICT_MODEL) or config["train"]["epochs"] > 0)


rule evaluate:
    input:
        native=os.path.join(PRED_DIR, "{subject}", "{subject}_seg.nii.gz"),
        mni=os.path.join(PRED_DIR, "{subject}", "{subject}_seg_mni.nii.gz"),
        store=os.path.join(OUT, "zarr", "{subject}.zarr"),
    output:
        metrics=os.path.join(EVAL_DIR, "subjects", "{subject}.tsv"),
    params:
        io=io_params(lambda w: EVAL_CFG | {"label": COHORT.labels[w.subject]}),
    log:
        log_path("evaluate"),
    benchmark:
        bench_path("evaluate")
    threads: 1
    resources:
        mem_mb=mem_mb("light"),
        runtime=runtime_min("light"),
    conda:
        CONDA_ENV
    shell:
        step_cmd("evaluate")


rule aggregate:
    input:
        # positional, and the step rebuilds the paths from the pattern: named inputs travel in --io, and
        # 10 000 paths would overflow Linux's 128 KiB limit on one command-line argument
        [os.path.join(EVAL_DIR, "subjects", f"{s}.tsv") for s in PREDICT_SUBJECTS],
    output:
        metrics=os.path.join(EVAL_DIR, "metrics.tsv"),
        summary=report(os.path.join(EVAL_DIR, "summary.tsv"), caption="../report/summary.rst", category="Evaluation"),
    params:
        io=io_params({"scheduler": config["dask"]["scheduler"], "subjects": PREDICT_SUBJECTS,
                      "metrics_pattern": os.path.join(EVAL_DIR, "subjects", "{subject}.tsv")}),
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
