# N4 bias-field correction on MR modalities (voxflow.preprocess.n4).


rule n4:
    input:
        **images(PRE_N4_STEP),
    output:
        **images("n4"),
        **{f"field_{m}": sub_path("n4", f"{m}_bias.nii.gz") for m in MODS},
        qc=report(qc_path("n4"), caption="../report/qc.rst", category="Preprocessing QC",
                  subcategory="{subject}", labels={"subject": "{subject}", "step": "n4"}),
    params:
        io=io_params(PRE["n4"] | {"reference": REF, "modality_types": INP["modality_types"]}),
    log:
        log_path("n4"),
    benchmark:
        bench_path("n4")
    group: CHAIN_GROUP
    threads: 1
    resources:
        mem_mb=mem_mb("heavy"),
        runtime=runtime_min("heavy"),
    conda:
        CONDA_ENV
    shell:
        step_cmd("n4")
