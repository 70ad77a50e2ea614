# Cohort QC: every included subject's quality scores (qc/<subject>/scores.json, written by its chain's qc_scores
# step) in one table, and the outliers flagged against the cohort (voxflow.qc.cohort): qc/scores.tsv, qc/flags.tsv.
# The scores files are read by pattern after the checkpoint cohort_status, not declared: one job listing 10 000
# inputs costs Snakemake a membership test per producer (quadratic); the chain writes a subject's scores before its
# status file, and cohort_status is newer than every status file, so the table is rebuilt whenever a subject's is.
# A checkpoint: with qc.exclude_flagged the split leaves the flagged subjects out of training (plan.smk).


checkpoint qc_flags:
    input:
        cohort=LAYOUT.cohort_status,
    output:
        scores=LAYOUT.qc_scores,
        flags=LAYOUT.qc_flags,
    log:
        LAYOUT.log("qc_flags", "cohort"),
    benchmark:
        LAYOUT.benchmark("qc_flags", "cohort")
    conda:
        CONDA_ENV
    threads: 2
    resources:
        mem_mb=mem_mb("light"),
        runtime=runtime_min("light"),
    params:
        **step_params(
            {
                "flag_z": SETTINGS.section("qc")["flag_z"],
                "scheduler": SETTINGS.dask_scheduler,
                "scores": CHAIN_STEP["qc_scores"].outputs["scores"],
            }
        ),
    shell:
        step_cmd("qc_flags", subject="cohort")


def qc_flagged():
    """subject -> its flags (voxflow.qc.cohort.flag_summary), once the checkpoint qc_flags ran; {} without
    qc.exclude_flagged (then nothing waits for it)."""
    if not EXCLUDE_FLAGGED:
        return {}
    from voxflow.qc.cohort import flag_summary, read_flags

    return flag_summary(read_flags(checkpoints.qc_flags.get().output.flags))
