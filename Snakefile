# voxflow: raw scans -> preprocessed zarr stores (-> training, inference, report).
# The per-subject chain is defined once in voxflow.pipeline.chain; workflow/rules/preprocess.smk makes its rules.
# Thin by design: load and validate the config, include the rules, name the targets.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/validate.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/qc.smk"
include: "workflow/rules/plan.smk"
include: "workflow/rules/intensity.smk"
include: "workflow/rules/synthesis.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/infer.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        all_targets(),
