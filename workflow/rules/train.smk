# One training job per fold (voxflow.training.train); rerunning resumes from checkpoint_latest.pt.
# train.gpus / train.processes > 1: the job runs under torchrun, one DDP process per GPU.
TRAIN_PROCESSES = SETTINGS.train_processes  # DDP world size, checked with the rest of the config


def previous_stage_inputs(wildcards):
    """A cascade's full-resolution fold: every low-resolution fold's out-of-fold predictions."""
    if MULTI_CONFIG and wildcards.configuration == "3d_cascade":
        return {
            f"lowres_{k}": os.path.join(conf_dir("3d_cascade/lowres"), f"fold_{k}", "val_predictions.npz")
            for k in FOLDS
        }
    return {}


rule train:
    input:
        unpack(previous_stage_inputs),
        **({"synthesis": SYNTH_MODEL} if SYNTH_P > 0 else {}),
        stores=STORES_JSON,
        split=os.path.join(MODEL_DIR, "split.json"),
        plans=os.path.join(CONF_DIR, "plans.json"),
        # train.augment.synthetic_modality_p > 0: samples get a modality replaced by the synthesis model's output
    output:
        **(
            {"val_probabilities": os.path.join(CONF_DIR, "fold_{fold}", "val_probabilities.npz")}
            if MULTI_CONFIG
            else {}
        ),
        model=os.path.join(CONF_DIR, "fold_{fold}", "model_final.pt"),
        val_predictions=os.path.join(CONF_DIR, "fold_{fold}", "val_predictions.npz"),
        # several configurations: the validation subjects' probabilities, to score ensembles on
        curve=report(
            os.path.join(CONF_DIR, "fold_{fold}", "curve.png"),
            caption="../report/curve.rst",
            category="Training",
            labels={"fold": f"{CONF_LOG}{{fold}}"},
        ),
    log:
        os.path.join(OUT, "logs", "train", f"{CONF_LOG}fold_{{fold}}.log"),
    benchmark:
        os.path.join(OUT, "benchmarks", "train", f"{CONF_LOG}fold_{{fold}}.tsv")
    conda:
        CONDA_ENV
    threads: SETTINGS.train_threads
    resources:
        mem_mb=mem_mb("heavy"),
        runtime=runtime_min("train"),
        gpu=SETTINGS.train_gpus,
    params:
        **step_params(
            lambda w: {"fold": int(w.fold), "train": SETTINGS.section("train"), "infer": SETTINGS.section("infer")}
        ),
    shell:
        step_cmd(
            "train",
            subject=("{wildcards.configuration:q}_" if MULTI_CONFIG else "") + "fold{wildcards.fold}",
            nproc=TRAIN_PROCESSES,
        )


if MULTI_CONFIG:

    rule choose_configuration:
        """Every configuration and ensemble scored on the out-of-fold subjects; the best one (within
        model.choice_tolerance, the cheaper), its post-processing and the table in model/inference.json."""
        input:
            **{
                f"probs_{c}_{k}": os.path.join(conf_dir(c), f"fold_{k}", "val_probabilities.npz")
                for c in CONFIGURATIONS
                for k in FOLDS
            },
            **{f"plans_{c}": os.path.join(conf_dir(c), "plans.json") for c in CONFIGURATIONS},
            stores=STORES_JSON,
        output:
            inference=INFERENCE_JSON,
            plans=os.path.join(MODEL_DIR, "plans.json"),  # the chosen first configuration's (predict-only checks)
        log:
            os.path.join(OUT, "logs", "choose_configuration", "choose_configuration.log"),
        benchmark:
            os.path.join(OUT, "benchmarks", "choose_configuration", "choose_configuration.tsv")
        conda:
            CONDA_ENV
        threads: 1
        resources:
            mem_mb=mem_mb("heavy"),
            runtime=runtime_min("light"),
        params:
            **step_params(
                SETTINGS.section("postprocess")
                | {
                    "configurations": CONFIGURATIONS,
                    "folds": FOLDS,
                    "tolerance": SETTINGS.section("model")["choice_tolerance"],
                }
            ),
        shell:
            step_cmd("choose_configuration", subject="cohort")


rule postprocess_plan:
    input:
        **{f"val_{k}": os.path.join(MODEL_DIR, f"fold_{k}", "val_predictions.npz") for k in FOLDS},
        stores=STORES_JSON,
    output:
        postprocessing=os.path.join(MODEL_DIR, "postprocessing.json"),
    log:
        os.path.join(OUT, "logs", "postprocess_plan", "postprocess_plan.log"),
    benchmark:
        os.path.join(OUT, "benchmarks", "postprocess_plan", "postprocess_plan.tsv")
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=mem_mb("light"),
        runtime=runtime_min("light"),
    params:
        **step_params(SETTINGS.section("postprocess")),
    shell:
        step_cmd("postprocess_plan", subject="cohort")
