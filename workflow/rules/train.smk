# One training job per fold (voxflow.training.train); rerunning resumes from checkpoint_latest.pt.
# train.gpus / train.processes > 1: the job runs under torchrun, one DDP process per GPU.
from voxflow.core.layout import CURVE_PNG_FILE, VAL_PREDICTIONS_FILE, VAL_PROBABILITIES_FILE, fold_name

TRAIN_PROCESSES = SETTINGS.train_processes  # DDP world size, checked with the rest of the config


def previous_stage_inputs(wildcards):
    """A cascade's full-resolution fold: every low-resolution fold's out-of-fold predictions."""
    if MULTI_CONFIG and wildcards.configuration == "3d_cascade":
        return {f"lowres_{k}": conf_model("3d_cascade/lowres").fold_file(k, VAL_PREDICTIONS_FILE) for k in FOLDS}
    return {}


rule train:
    input:
        unpack(previous_stage_inputs),
        **({"synthesis": LAYOUT.model.synthesis_model} if SYNTH_P > 0 else {}),
        stores=LAYOUT.model.stores,
        split=LAYOUT.model.split,
        plans=CONF_MODEL.plans,
        # train.augment.synthetic_modality_p > 0: samples get a modality replaced by the synthesis model's output
    output:
        **({"val_probabilities": CONF_MODEL.fold_file("{fold}", VAL_PROBABILITIES_FILE)} if MULTI_CONFIG else {}),
        model=CONF_MODEL.fold_model("{fold}"),
        val_predictions=CONF_MODEL.fold_file("{fold}", VAL_PREDICTIONS_FILE),
        # several configurations: the validation subjects' probabilities, to score ensembles on
        curve=report(
            CONF_MODEL.fold_file("{fold}", CURVE_PNG_FILE),
            caption="../report/curve.rst",
            category="Training",
            labels={"fold": f"{CONF_LOG}{{fold}}"},
        ),
    log:
        LAYOUT.log("train", CONF_LOG + fold_name("{fold}")),
    benchmark:
        LAYOUT.benchmark("train", CONF_LOG + fold_name("{fold}"))
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
                f"probs_{c}_{k}": conf_model(c).fold_file(k, VAL_PROBABILITIES_FILE)
                for c in CONFIGURATIONS
                for k in FOLDS
            },
            **{f"plans_{c}": conf_model(c).plans for c in CONFIGURATIONS},
            stores=LAYOUT.model.stores,
        output:
            inference=LAYOUT.model.inference,
            plans=LAYOUT.model.plans,  # the chosen first configuration's (predict-only checks)
        log:
            LAYOUT.log("choose_configuration", "choose_configuration"),
        benchmark:
            LAYOUT.benchmark("choose_configuration", "choose_configuration")
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
        **{f"val_{k}": LAYOUT.model.fold_file(k, VAL_PREDICTIONS_FILE) for k in FOLDS},
        stores=LAYOUT.model.stores,
    output:
        postprocessing=LAYOUT.model.postprocessing,
    log:
        LAYOUT.log("postprocess_plan", "postprocess_plan"),
    benchmark:
        LAYOUT.benchmark("postprocess_plan", "postprocess_plan")
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
