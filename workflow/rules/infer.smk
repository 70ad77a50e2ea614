# Sliding-window inference with the fold ensemble, postprocessing, and the prediction back in
# the subject's native space (voxflow.learn.infer).
PRED_DIR = os.path.join(OUT, "predictions")
PREDICT_SUBJECTS = (SPLIT["test"] if SPLIT and config["infer"]["subjects"] == "test" else SUBJECTS)


rule predict:
    input:
        store=os.path.join(OUT, "zarr", "{subject}.zarr"),
        **{f"model_{k}": os.path.join(MODEL_DIR, f"fold_{k}", "model_final.pt") for k in FOLDS},
        postprocessing=os.path.join(MODEL_DIR, "postprocessing.json"),
    output:
        mni=os.path.join(PRED_DIR, "{subject}", "{subject}_seg_mni.nii.gz"),
        native=os.path.join(PRED_DIR, "{subject}", "{subject}_seg.nii.gz"),
        **({"prob_native": os.path.join(PRED_DIR, "{subject}", "{subject}_prob.nii.gz")}
           if config["infer"]["probabilities"] else {}),
    params:
        io=io_params(config["infer"]),
    log:
        log_path("predict"),
    benchmark:
        bench_path("predict")
    threads: 2
    resources:
        mem_mb=RES["mem_mb_heavy"],
        gpu=1 if config["train"]["gpu"] else 0,
    conda:
        CONDA_ENV
    shell:
        step_cmd("predict")
