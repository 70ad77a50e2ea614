# Sliding-window inference with the fold ensemble, postprocessing, and the prediction on the store's
# grid and back in the subject's native space (voxflow.inference.predict).
from voxflow.core.layout import ModelFolder, fold_index, fold_models

# The stores' grid: MNI152 (preprocess.space: mni), or the native image cropped and resampled (native). A subject's
# prediction (LAYOUT.prediction) is in its native space (the raw scan's grid), or on the stores' grid (STORE_SPACE).
STORE_SPACE = SETTINGS.chain.store_space
PREDICT_MODEL = SETTINGS.predict_model_dir
if PREDICT_MODEL:
    # Predict-only: a trained model folder, every subject, no training.
    MODEL_SRC = ModelFolder(PREDICT_MODEL)
    PRED_FOLDS = [fold_index(p.parent.name) for p in fold_models(PREDICT_MODEL)]
    # a model of several configurations: the models model/inference.json chose
    PRED_INFERENCE = MODEL_SRC.inference if os.path.isfile(MODEL_SRC.inference) else None
else:
    MODEL_SRC, PRED_FOLDS = LAYOUT.model, FOLDS
    PRED_INFERENCE = LAYOUT.model.inference if MULTI_CONFIG else None


def predict_subjects():
    """The subjects to predict, among those not excluded (after the checkpoint cohort_status): every one in
    predict-only mode or with infer.subjects: all, else the split's test subjects."""
    if SETTINGS.predicts_every_subject:
        return cohort_state()["subjects"]
    sp = current_split()
    return sp["test"] if sp else []


if PREDICT_MODEL and PRED_INFERENCE:
    from voxflow.core.layout import inference_models

    PRED_MODELS = inference_models(PRED_INFERENCE)
elif MULTI_CONFIG:  # every configuration's fold models (the report's curves); predict reads inference.json's
    PRED_MODELS = [
        conf_model(c).fold_model(k)
        for c in CONFIGURATIONS + (["3d_cascade/lowres"] if "3d_cascade" in CONFIGURATIONS else [])
        for k in FOLDS
    ]
else:
    PRED_MODELS = [MODEL_SRC.fold_model(k) for k in PRED_FOLDS]
# the file that stands for the whole model: the post-processing decision, or the configuration choice
PRED_DECISION = PRED_INFERENCE or MODEL_SRC.postprocessing
# Predict-only: the fold models are files no rule writes, so a model replaced in place would go unseen
# behind postprocessing.json; their size and mtime, read once here, are in the params (a changed model
# reruns the predictions). In a training run postprocess_plan runs after every fold, so there
# postprocessing.json is always newer than the models.
PRED_MODEL_STAMPS = [[p, os.stat(p).st_size, os.stat(p).st_mtime_ns] for p in PRED_MODELS] if PREDICT_MODEL else None


rule predict:
    input:
        **({"inference": PRED_INFERENCE} if PRED_INFERENCE else {"postprocessing": MODEL_SRC.postprocessing}),
        store=job_function(lambda wildcards: inference_store(wildcards.subject)),
        # stands for the whole model: postprocess_plan writes it from every fold's validation
        # predictions, after the fold's model_final.pt. Listing the fold models here too added 5 files
        # to each of 2000 jobs at 10 000 subjects: Snakemake spends ~0.3 ms per listed file.
    output:
        **({"prob_native": LAYOUT.probabilities()} if SETTINGS.writes_probabilities else {}),
        # on the store's grid: <subject>_seg_mni.nii.gz (MNI152) or <subject>_seg_resampled.nii.gz (native
        # space: the cropped, resampled native grid the network saw)
        store_grid=LAYOUT.prediction("{subject}", STORE_SPACE),
        native=LAYOUT.prediction(),
        # what the prediction was made from: the model, the store, and any synthesized modality
        sidecar=LAYOUT.prediction_sidecar(),
    log:
        LAYOUT.log("predict"),
    benchmark:
        LAYOUT.benchmark("predict")
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=mem_mb("heavy"),
        runtime=runtime_min("infer"),
        gpu=SETTINGS.predict_gpus,
    params:
        **step_params(
            SETTINGS.section("infer") | {"modalities": MODS, "models": PRED_MODELS, "model_stamps": PRED_MODEL_STAMPS}
        ),
    shell:
        step_cmd("predict")
