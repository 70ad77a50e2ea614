# N4 bias-field correction on MR modalities (voxflow.preprocess.n4).


N4 = StepIO("n4", input=images(PRE_N4_STEP),
            output={**images("n4"), **{f"field_{m}": sub_path("n4", f"{m}_bias.nii.gz") for m in MODS},
                    "qc": qc_path("n4")},
            config=PRE["n4"] | {"reference": REF, "modality_types": INP["modality_types"]})
if CT_DIRECT:  # CT only, no skull stripping: the chain goes from coreg (or denoise) to the native step
    CHAIN.remove(N4)


if not FUSED:
    rule n4:
        input:
            **N4.input,
        output:
            **N4.outputs("qc"),
            qc=qc_report("n4"),
        params:
            **step_params(N4.config),
        log:
            log_path("n4"),
        benchmark:
            bench_path("n4")
        threads: 1
        resources:
            mem_mb=mem_mb("heavy"),
            runtime=runtime_min("heavy"),
        conda:
            CONDA_ENV
        shell:
            step_cmd("n4")
