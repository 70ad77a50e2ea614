# The cohort report: ONE self-contained HTML file (voxflow.report) with the metrics, QC images,
# training curves, run times and provenance. The command stays short on big cohorts: predictions and
# models are positional inputs (they order the DAG; named inputs travel in --io), the predicted subjects
# come in a file, and the config's subject lists are shortened. QC images are not inputs: the jobs that
# make the stores write them (listing 30 000 of them cost seconds of DAG building for an unread list).
REPORT_CFG = {"config": shorten_subject_lists(config), "output_dir": OUT, "model_dir": MODEL_SRC,
              "workflow_dir": workflow.basedir, "max_qc_subjects": 12}
PREDICTED_SUBJECTS = os.path.join(OUT, "status", "predicted.json")  # not under predictions/: a subject's folder


rule predicted_subjects:
    input:
        cohort=COHORT_STATUS,
    output:
        subjects=PREDICTED_SUBJECTS,
    params:
        subjects=job_function(lambda wildcards: {"subjects": predict_subjects()}),
    localrule: True
    run:
        write_json_atomic(params.subjects, output.subjects)


rule report:
    input:
        job_function(lambda wildcards: [os.path.join(PRED_DIR, s, f"{s}_seg_mni.nii.gz") for s in predict_subjects()]),
        [os.path.join(MODEL_SRC, f"fold_{k}", "model_final.pt") for k in PRED_FOLDS],
        cohort=COHORT_STATUS,
        postprocessing=os.path.join(MODEL_SRC, "postprocessing.json"),
        subjects=PREDICTED_SUBJECTS,
        **({"metrics": os.path.join(EVAL_DIR, "metrics.tsv"), "summary": os.path.join(EVAL_DIR, "summary.tsv")}
           if EVALUATE else {}),
    output:
        html=report(os.path.join(OUT, "report", "report.html"), caption="../report/report.rst",
                    category="Report"),
    params:
        **step_params(REPORT_CFG),
    log:
        os.path.join(OUT, "logs", "report", "report.log"),
    benchmark:
        os.path.join(OUT, "benchmarks", "report", "report.tsv")
    threads: 1
    resources:
        mem_mb=mem_mb("light"),
        runtime=runtime_min("light"),
    conda:
        CONDA_ENV
    shell:
        step_cmd("report", subject="cohort")
