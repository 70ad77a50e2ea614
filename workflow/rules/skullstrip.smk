# Skull stripping: deepbet, template or none; the mask is applied to all modalities
# (voxflow.preprocess.skullstrip).


rule skullstrip:
    input:
        **images("n4"),
    output:
        **images("brain"),
        mask=sub_path("brain", "brain_mask.nii.gz"),
        qc=report(qc_path("skullstrip"), caption="../report/qc.rst", category="Preprocessing QC",
                  subcategory="{subject}", labels={"subject": "{subject}", "step": "skullstrip"}),
    params:
        io=io_params(PRE["skullstrip"] | {"reference": REF}),
    log:
        log_path("skullstrip"),
    benchmark:
        bench_path("skullstrip")
    group: CHAIN_GROUP
    threads: 1
    resources:
        mem_mb=mem_mb("heavy"),
        runtime=runtime_min("heavy"),
    conda:
        CONDA_ENV
    shell:
        step_cmd("skullstrip")
