# Cohort: deterministic split, dataset fingerprint and plans.json (voxflow.planning: fingerprint, planner, plans).
from voxflow.planning.planner import write_training_stores
from voxflow.core.split import make_split, training_subjects

# model.configurations: each one trained on the same folds in model/<configuration>/, the best one or ensemble
# chosen on the out-of-fold predictions (rule choose_configuration -> model/inference.json). Without: model.dim
# alone, in model/.
# model.cascade adds 3d_cascade: its full-resolution stage in model/3d_cascade/, the low-resolution one in
# model/3d_cascade/lowres/ (a configuration of its own for the plan and train rules, never chosen alone).
CONFIGURATIONS = list(SETTINGS.configurations)
MULTI_CONFIG = bool(CONFIGURATIONS)
CONF_LOG = "{configuration}_" if MULTI_CONFIG else ""  # log and benchmark names


wildcard_constraints:
    configuration="2d|2\\.5d|3d|3d_cascade|3d_cascade/lowres",


def conf_model(configuration):
    """A configuration's model folder (voxflow.core.layout.ModelFolder): model/<configuration>, or model/ alone."""
    return LAYOUT.model.configuration(configuration if MULTI_CONFIG else None)


CONF_MODEL = conf_model("{configuration}")  # the plan and train rules' model folder


def model_section(wildcards):
    """The model settings of the job's configuration (model.dim set to it; a cascade's stages are 3D, with
    model.cascade_stage; model.configuration names it, recorded in plans.json)."""
    if not MULTI_CONFIG:
        return SETTINGS.section("model")
    c = wildcards.configuration
    stage = {"3d_cascade": "fullres", "3d_cascade/lowres": "lowres"}.get(c)
    return SETTINGS.section("model") | {"dim": "3d" if stage else c, "cascade_stage": stage, "configuration": c}


SPLIT_CFG = SETTINGS.section("split")
TRAINING = SETTINGS.training
FOLDS = list(SETTINGS.folds)
# A config that cannot be split even before any subject is excluded (too few training subjects for the folds,
# unknown split.test_subjects) failed at load time already: voxflow.settings.checks (common.smk).

_COHORT_CACHE = {}


def cohort_state():
    """status/cohort.json, once the checkpoint cohort_status has run (before: Snakemake's
    IncompleteCheckpointException, which defers every rule that asks): included subjects, test subjects."""
    path = checkpoints.cohort_status.get().output.cohort
    stamp = os.stat(path).st_mtime_ns
    if _COHORT_CACHE.get("stamp") != stamp:
        _COHORT_CACHE.clear()
        _COHORT_CACHE.update(json.loads(open(path).read()), stamp=stamp)
    return _COHORT_CACHE


def current_split():
    """The split of the included subjects, as the split rule computes it (a pure function of the config,
    status/cohort.json and, with qc.exclude_flagged, qc/flags.tsv); None when it cannot be made (the split job then
    fails with the reason)."""
    state = cohort_state()
    if "split" not in state:
        try:
            state["split"] = make_split(
                state["subjects"],
                SPLIT_CFG["n_folds"],
                SPLIT_CFG["test_fraction"],
                SPLIT_CFG["seed"],
                state.get("test_subjects"),
                qc_excluded=qc_flagged(),
                holdout_fraction=SPLIT_CFG["holdout_fraction"],
                incomplete=state.get("incomplete"),
            )
        except ValueError:
            state["split"] = None
    return state["split"]


def train_subjects():
    sp = current_split() if TRAINING else None
    return training_subjects(sp) if sp else []


@job_function
def training_store_inputs(wildcards):
    return [store_input(s) for s in train_subjects()]


rule training_stores:
    """The training stores in one manifest (subject -> store) that plan, train and postprocess_plan
    read, instead of each listing thousands of stores as inputs: Snakemake checks `file in job.input`
    for every consumer of a producer, so with 10 000 subjects and 5 folds that listing made DAG
    building quadratic, and the paths would overflow Linux's 128 KiB limit on one command-line argument."""
    input:
        training_store_inputs,
        split=LAYOUT.model.split,
    output:
        stores=LAYOUT.model.stores,
    localrule: True
    run:
        write_training_stores(input.split, store("{subject}"), output.stores)


rule split:
    input:
        **({"flags": LAYOUT.qc_flags} if EXCLUDE_FLAGGED else {}),  # qc.exclude_flagged: flagged ones not trained on
        subjects=LAYOUT.cohort_status,
    output:
        split=LAYOUT.model.split,
    log:
        LAYOUT.log("split", "split"),
    benchmark:
        LAYOUT.benchmark("split", "split")
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=mem_mb("light"),
        runtime=runtime_min("light"),
    params:
        **step_params({k: v for k, v in SPLIT_CFG.items() if k != "test_subjects"}),
    shell:
        step_cmd("split", subject="cohort")


rule fingerprint:
    """The training stores measured once (shapes, spacings, intensities, class voxels), whatever the number of
    configurations planned from it."""
    input:
        **({"normalization": NORM_JSON} if NORM_JSON else {}),
        split=LAYOUT.model.split,
        stores=LAYOUT.model.stores,
        # the stores' dataset-level normalization (their rules are known only after the checkpoint)
    output:
        fingerprint=LAYOUT.model.fingerprint,
    log:
        LAYOUT.log("fingerprint", "fingerprint"),
    benchmark:
        LAYOUT.benchmark("fingerprint", "fingerprint")
    conda:
        CONDA_ENV
    threads: 2
    resources:
        mem_mb=mem_mb("heavy"),
        runtime=runtime_min("heavy"),
    params:
        **step_params({"scheduler": SETTINGS.dask_scheduler}),
    shell:
        step_cmd("fingerprint", subject="cohort")


rule plan:
    input:
        fingerprint=LAYOUT.model.fingerprint,
    output:
        plans=CONF_MODEL.plans,
    log:
        LAYOUT.log("plan", f"{CONF_LOG}plan"),
    benchmark:
        LAYOUT.benchmark("plan", f"{CONF_LOG}plan")
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=mem_mb("light"),
        runtime=runtime_min("light"),
    params:
        **step_params(
            lambda w: {
                "model": model_section(w),
                "train": SETTINGS.section("train"),
                "modalities": MODS,
                "label_values": INP["label_values"],
            }
        ),
    shell:
        step_cmd("plan", subject="cohort")


rule model_settings:
    """What a scan needs to go through this model outside the workflow (`voxflow predict`, packed by `voxflow
    export-model`): the chain's settings (voxflow.settings.ChainSettings.to_json) and the inference settings."""
    output:
        settings=LAYOUT.model.settings,
    localrule: True
    params:
        settings=settings_text(SETTINGS.chain.to_json() | {"infer": SETTINGS.section("infer")}),
    run:
        # `config["infer"]` is SETTINGS.section("infer") (the same dict); a run block's text is its rule's code rerun
        # trigger (compared with the text recorded for model/settings.json), so this one is left as it was written
        write_json_atomic(SETTINGS.chain.to_json() | {"infer": config["infer"]}, output.settings)
