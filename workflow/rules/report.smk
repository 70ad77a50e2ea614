# The cohort report: ONE self-contained HTML file (voxflow.report.build, rendered from voxflow/report/templates/) with the
# metrics, QC images, training curves, run times and provenance.
#
# Every file the step reads is an input of the rule, and the job stays small on big cohorts:
# - named inputs (they travel in --io, so no subject ID among them): the tables, status/cohort.json, the predicted
#   subjects (status/predicted.json), the subjects shown (status/report_subjects.json), the fold models (their
#   model_final.pt holds the training curve), plans, postprocessing decision and split, the cohort's QC scores
#   and flags (qc/scores.tsv, qc/flags.tsv);
# - positional inputs (not in --io; the step finds them from the path patterns in REPORT_PATHS and the two subject
#   lists): the files of the subjects shown in the QC sections, at most REPORT_QC_SUBJECTS each (their stores and
#   predictions on the stores' grid; their QC folder, or QC figures with one job per step; the QC-flagged
#   subjects, worst first, are among them) and, in the
#   predict-only view only, every native prediction (the volume table; in an evaluation run metrics.tsv stands for
#   the predictions, and no other rule pulls them in predict-only mode).
# Which subjects the QC sections show is written by the checkpoint report_subjects: the prediction QC shows the
# worst ones, known only from metrics.tsv, and the cohort QC the flagged ones, known only from qc/flags.tsv, so the
# report's per-subject inputs come from its output.
REPORT_QC_SUBJECTS = 12  # subjects shown per QC section
# The QC figure of each step that draws one: with one job per step, the figures are the steps' declared outputs;
# with one job per subject they are in the job's declared folder qc/<subject> (preprocess.smk).
QC_FIGURES = {st.name: st.outputs[st.qc] for st in CHAIN if st.qc}
REPORT_PATHS = {
    "prediction": LAYOUT.prediction("{subject}", STORE_SPACE),  # on the stores' grid (prediction QC)
    "native": LAYOUT.prediction(),  # native space (predict-only: the volume table)
    "store": store_input(
        "{subject}"
    ),  # the store, or the status file that stands for it (voxflow.core.stores.store_path)
    "qc": LAYOUT.qc_figure("{step}"),
    "synthesis_qc": LAYOUT.synthesis_qc(),  # a completed subject's modalities, the synthesized ones marked
    # Run times: Snakemake writes a job's benchmark file itself, after the job, so no rule has it as an output
    # and it cannot be an input (the report's own appears after the report). The step reads the files that
    # match this pattern when it runs: those of the jobs before it, and any left by earlier runs.
    "benchmarks": LAYOUT.benchmark("{rule}", "{job}"),
}
REPORT_CFG = {
    "config": shorten_subject_lists(SETTINGS.config),
    "output_dir": OUT,
    "workflow_dir": workflow.basedir,
    "max_qc_subjects": REPORT_QC_SUBJECTS,
    "store_space": STORE_SPACE,
    "paths": REPORT_PATHS,
    "qc_steps": list(QC_FIGURES),
}
REPORT_SPLIT = MODEL_SRC.split  # predict-only: the trained model's, when it has one


rule predicted_subjects:
    input:
        cohort=LAYOUT.cohort_status,
    output:
        subjects=LAYOUT.predicted_subjects,
    localrule: True
    params:
        subjects=job_function(lambda wildcards: {"subjects": predict_subjects()}),
    run:
        write_json_atomic(params.subjects, output.subjects)


checkpoint report_subjects:
    """The subjects the report's QC sections show, in order (voxflow.report.build.shown_subjects): the predicted ones,
    worst lesion Dice first, the QC-flagged ones, worst first, and the cohort's, flagged first, then by name; at
    most REPORT_QC_SUBJECTS each."""
    input:
        **({"metrics": LAYOUT.metrics} if EVALUATE else {}),
        cohort=LAYOUT.cohort_status,
        subjects=LAYOUT.predicted_subjects,
        flags=LAYOUT.qc_flags,
    output:
        subjects=LAYOUT.report_subjects,
    localrule: True
    params:
        cap=REPORT_QC_SUBJECTS,
    run:
        from voxflow.report import write_shown_subjects

        # kept as written: a run block's text is its rule's code rerun trigger
        # fmt: off
        write_shown_subjects(input.get("metrics"), input.subjects, input.cohort, params.cap, output.subjects,
                             flags_tsv=input.flags)
        # fmt: on


@job_function
def report_subject_files(wildcards):
    """The files of the subjects the QC sections show (after the checkpoint report_subjects); the flagged
    subjects' QC images are shown in the cohort QC too."""
    shown = json.loads(open(checkpoints.report_subjects.get().output.subjects).read())
    files = [f for s in shown["prediction_qc"] for f in (LAYOUT.prediction(s, STORE_SPACE), store_input(s))]
    for s in dict.fromkeys(shown.get("flagged", []) + shown["preprocessing_qc"]):
        files += [LAYOUT.qc_dir(s)] if FUSED else [p.replace("{subject}", s) for p in QC_FIGURES.values()]
    # the completed subjects' synthesis figures (input.missing: synthesize), at most REPORT_QC_SUBJECTS
    completed = [s for s in predict_subjects() if s in INCOMPLETE][:REPORT_QC_SUBJECTS]
    return files + [LAYOUT.synthesis_qc(s) for s in completed]


@job_function
def report_volume_files(wildcards):
    """Predict-only view: every native prediction (after the checkpoint cohort_status)."""
    return [] if EVALUATE else [LAYOUT.prediction(s) for s in predict_subjects()]


rule report:
    input:
        report_subject_files,
        report_volume_files,
        **({"split": REPORT_SPLIT} if TRAINING or os.path.isfile(REPORT_SPLIT) else {}),
        **(
            {
                "synthesis": LAYOUT.model.synthesis_summary,
                "synthesis_curve": LAYOUT.model.synthesis_curve,
            }
            if SYNTHESIS
            else {}
        ),
        **({"metrics": LAYOUT.metrics, "summary": LAYOUT.summary} if EVALUATE else {}),
        cohort=LAYOUT.cohort_status,
        subjects=LAYOUT.predicted_subjects,
        shown=LAYOUT.report_subjects,
        models=PRED_MODELS,
        plans=MODEL_SRC.plans,
        postprocessing=PRED_DECISION,  # postprocessing.json, or inference.json (several configurations)
        qc_scores=LAYOUT.qc_scores,
        qc_flags=LAYOUT.qc_flags,
    output:
        html=report(LAYOUT.report_html, caption="../report/report.rst", category="Report"),
    log:
        LAYOUT.log("report", "report"),
    benchmark:
        LAYOUT.benchmark("report", "report")
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=mem_mb("light"),
        runtime=runtime_min("light"),
    params:
        **step_params(REPORT_CFG),
    shell:
        step_cmd("report", subject="cohort")
