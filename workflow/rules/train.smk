# One training job per fold (voxflow.learn.train); rerunning resumes from checkpoint_latest.pt.
# train.gpus / train.processes > 1: the job runs under torchrun, one DDP process per GPU.
from voxflow.learn.launch import train_gpus

TRAIN_PROCESSES = SETTINGS.train_processes  # DDP world size, checked with the rest of the config


rule train:
    input:
        stores=STORES_JSON,
        split=os.path.join(MODEL_DIR, "split.json"),
        plans=os.path.join(MODEL_DIR, "plans.json"),
    output:
        model=os.path.join(MODEL_DIR, "fold_{fold}", "model_final.pt"),
        val_predictions=os.path.join(MODEL_DIR, "fold_{fold}", "val_predictions.npz"),
        curve=report(os.path.join(MODEL_DIR, "fold_{fold}", "curve.png"), caption="../report/curve.rst",
                     category="Training", labels={"fold": "{fold}"}),
    params:
        **step_params(lambda w: {"fold": int(w.fold), "train": config["train"], "infer": config["infer"]}),
    log:
        os.path.join(OUT, "logs", "train", "fold_{fold}.log"),
    benchmark:
        os.path.join(OUT, "benchmarks", "train", "fold_{fold}.tsv")
    threads: config["train"]["threads"]
    resources:
        mem_mb=mem_mb("heavy"),
        runtime=runtime_min("train"),
        gpu=train_gpus(config["train"]),
    conda:
        CONDA_ENV
    shell:
        step_cmd("train", subject="fold{wildcards.fold}", nproc=TRAIN_PROCESSES)


rule postprocess_plan:
    input:
        **{f"val_{k}": os.path.join(MODEL_DIR, f"fold_{k}", "val_predictions.npz") for k in FOLDS},
        stores=STORES_JSON,
    output:
        postprocessing=os.path.join(MODEL_DIR, "postprocessing.json"),
    params:
        **step_params(config["postprocess"]),
    log:
        os.path.join(OUT, "logs", "postprocess_plan", "postprocess_plan.log"),
    benchmark:
        os.path.join(OUT, "benchmarks", "postprocess_plan", "postprocess_plan.tsv")
    threads: 1
    resources:
        mem_mb=mem_mb("light"),
        runtime=runtime_min("light"),
    conda:
        CONDA_ENV
    shell:
        step_cmd("postprocess_plan", subject="cohort")
