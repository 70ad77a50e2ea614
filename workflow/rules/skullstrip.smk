# Skull stripping: deepbet, template or none; the mask is applied to all modalities
# (voxflow.preprocess.skullstrip).


SKULLSTRIP = StepIO("skullstrip", input=images("n4"),
                    output={**images("brain"), "mask": sub_path("brain", "brain_mask.nii.gz"),
                            "qc": qc_path("skullstrip")},
                    config=PRE["skullstrip"] | {"reference": REF})
if CT_DIRECT:
    CHAIN.remove(SKULLSTRIP)


if not FUSED:
    rule skullstrip:
        input:
            **SKULLSTRIP.input,
        output:
            **SKULLSTRIP.outputs("qc"),
            qc=qc_report("skullstrip"),
        params:
            **step_params(SKULLSTRIP.config),
        log:
            log_path("skullstrip"),
        benchmark:
            bench_path("skullstrip")
        threads: 1
        resources:
            mem_mb=mem_mb("heavy"),
            runtime=runtime_min("heavy"),
        conda:
            CONDA_ENV
        shell:
            step_cmd("skullstrip")
