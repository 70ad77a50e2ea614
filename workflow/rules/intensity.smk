# Dataset-level intensity normalization (ct_dataset, nyul): learned once over the training subjects with
# dask, written to model/normalization.json, applied per subject by to_zarr (voxflow.preprocess.dataset_norm).
# Training subjects only (the parse-time split; the step re-reads split.json): test subjects never feed it.
# The images travel as positional inputs (they order the DAG) and as path templates in --io, so the command
# line does not grow with the cohort. Predict-only runs read the trained model's normalization.json.
from voxflow.pipeline.chain import image_path, label_path

_norm_paths = {
    "image": image_path(OUT, SPACE_STEP, "{modality}"),
    "mask": SPACE_MASK,
    "label": label_path(OUT, SPACE_STEP) if HAS_LABEL else None,
}

if NORM_JSON and not SETTINGS.predict_model_dir:

    rule normalization_stats:
        input:
            # the subjects' files are written before their status files, which the split (or, with no labels,
            # status/cohort.json: every included subject) follows
            **({"split": LAYOUT.model.split} if TRAINING else {"subjects": LAYOUT.cohort_status}),
        output:
            normalization=NORM_JSON,
        log:
            LAYOUT.log("normalization_stats", "normalization_stats"),
        benchmark:
            LAYOUT.benchmark("normalization_stats", "normalization_stats")
        conda:
            CONDA_ENV
        threads: 2
        resources:
            mem_mb=mem_mb("heavy"),
            runtime=runtime_min("heavy"),
        params:
            **step_params(
                PRE["normalize"]
                | {
                    "modalities": MODS,
                    "methods": dict(SETTINGS.chain.norm_methods),
                    "paths": _norm_paths,
                    "space": PRE["space"],
                    "scheduler": SETTINGS.dask_scheduler,
                }
            ),
        shell:
            step_cmd("normalization_stats", subject="cohort")
