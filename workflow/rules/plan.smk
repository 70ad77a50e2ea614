# Cohort: deterministic split, dataset fingerprint and plans.json (voxflow.learn.plan).
from voxflow.learn.plan import make_split

MODEL_DIR = os.path.join(OUT, "model")
SPLIT_CFG = config["split"]
# The split is a pure function of the config, so the DAG knows the test subjects at parse time;
# the split rule writes the same split to split.json, which later steps read.
try:
    SPLIT = make_split(SUBJECTS, SPLIT_CFG["n_folds"], SPLIT_CFG["test_fraction"], SPLIT_CFG["seed"],
                       SPLIT_CFG["test_subjects"]) if HAS_LABEL and not config["predict"]["model_dir"] else None
except ValueError as exc:
    raise WorkflowError(f"config error at 'split': {exc} (lower split.n_folds or split.test_fraction)") from None
TRAIN_SUBJECTS = sorted({s for f in SPLIT["folds"] for s in f["train"] + f["val"]}) if SPLIT else []
FOLDS = SPLIT_CFG["folds_to_train"] if SPLIT_CFG["folds_to_train"] is not None else list(range(SPLIT_CFG["n_folds"]))


def store(subject):
    return os.path.join(OUT, "zarr", f"{subject}.zarr")


STORES_JSON = os.path.join(MODEL_DIR, "stores.json")


rule training_stores:
    """The training stores in one manifest (subject -> store) that plan, train and postprocess_plan
    read, instead of each listing thousands of stores as inputs: Snakemake checks `file in job.input`
    for every consumer of a producer, so with 10 000 subjects and 5 folds that listing made DAG
    building quadratic, and the paths would overflow Linux's 128 KiB limit on one command-line argument."""
    input:
        [store(s) for s in TRAIN_SUBJECTS],
    output:
        stores=STORES_JSON,
    localrule: True
    run:
        write_json_atomic({s: store(s) for s in TRAIN_SUBJECTS}, output.stores)


COHORT_SUBJECTS = os.path.join(MODEL_DIR, "subjects.json")


rule cohort_subjects:
    """The cohort's subject IDs (sorted: the split does not depend on their order) and split.test_subjects
    in a file for the cohort rules: on the command line, 10 000 IDs of 20 characters would overflow
    Linux's 128 KiB limit on one argument. Rewritten only when the lists change (params)."""
    output:
        subjects=COHORT_SUBJECTS,
    params:
        subjects={"subjects": sorted(SUBJECTS), "test_subjects": SPLIT_CFG["test_subjects"]},
    localrule: True
    run:
        write_json_atomic(params.subjects, output.subjects)


rule split:
    input:
        subjects=COHORT_SUBJECTS,
    output:
        split=os.path.join(MODEL_DIR, "split.json"),
    params:
        **step_params({k: v for k, v in SPLIT_CFG.items() if k != "test_subjects"}),
    log:
        os.path.join(OUT, "logs", "split", "split.log"),
    benchmark:
        os.path.join(OUT, "benchmarks", "split", "split.tsv")
    threads: 1
    resources:
        mem_mb=mem_mb("light"),
        runtime=runtime_min("light"),
    conda:
        CONDA_ENV
    shell:
        step_cmd("split", subject="cohort")


rule plan:
    input:
        split=os.path.join(MODEL_DIR, "split.json"),
        stores=STORES_JSON,
    output:
        fingerprint=os.path.join(MODEL_DIR, "fingerprint.json"),
        plans=os.path.join(MODEL_DIR, "plans.json"),
    params:
        **step_params({"scheduler": config["dask"]["scheduler"], "model": config["model"],
                      "train": config["train"], "modalities": MODS, "label_values": INP["label_values"]}),
    log:
        os.path.join(OUT, "logs", "plan", "plan.log"),
    benchmark:
        os.path.join(OUT, "benchmarks", "plan", "plan.tsv")
    threads: 2
    resources:
        mem_mb=mem_mb("heavy"),
        runtime=runtime_min("heavy"),
    conda:
        CONDA_ENV
    shell:
        step_cmd("plan", subject="cohort")
