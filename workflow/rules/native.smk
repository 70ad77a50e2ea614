# Native space (preprocess.space: native): crop to the body/foreground and resample to a target spacing,
# no MNI registration; an identity transforms.json keeps inference's way back (voxflow.preprocess.native).
# CT only with skull stripping 'none' reads co-registration's (or denoising's) output directly (CT_DIRECT).
# (The CT path's config checks run with the others at load time: voxflow.config_checks.check_config.)


NATIVE = StepIO("native", input={**(images(PRE_N4_STEP) if CT_DIRECT else images("brain")),
                                 **({} if CT_DIRECT else {"mask": sub_path("brain", "brain_mask.nii.gz")}),
                                 **({"label": sub_path("ingest", "label.nii.gz")} if HAS_LABEL else {})},
                output={**images("native"), "mask": sub_path("native", "mask.nii.gz"),
                        **({"label": sub_path("native", "label.nii.gz")} if HAS_LABEL else {}),
                        "xfm": sub_path("native", "xfm"), "qc": qc_path("native")},
                config=PRE["native"] | {"reference": REF, "modality_types": INP["modality_types"]})
if SPACE_STEP != "native":
    CHAIN.remove(NATIVE)


if not FUSED:
    rule native:
        input:
            **NATIVE.input,
        output:
            **NATIVE.outputs("qc", "xfm"),
            xfm=directory(NATIVE.output["xfm"]),
            qc=qc_report("native"),
        params:
            **step_params(NATIVE.config),
        log:
            log_path("native"),
        benchmark:
            bench_path("native")
        threads: 1
        resources:
            mem_mb=mem_mb("heavy"),
            runtime=runtime_min("heavy"),
        conda:
            CONDA_ENV
        shell:
            step_cmd("native")
