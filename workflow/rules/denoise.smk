# Optional non-local-means denoising after co-registration, before N4 (voxflow.preprocess.denoise).
# Off by default: when preprocess.denoise.enabled is false the rule does not exist and N4 reads coreg/.


if PRE["denoise"]["enabled"]:
    DENOISE = StepIO("denoise", input=images("coreg"), output=images("denoise"),
                     config=PRE["denoise"] | {"modality_types": INP["modality_types"],
                                              "modalities_to_denoise": PRE["denoise"]["modalities"]})


if PRE["denoise"]["enabled"] and not FUSED:

    rule denoise:
        input:
            **DENOISE.input,
        output:
            **DENOISE.output,
        params:
            **step_params(DENOISE.config),
        log:
            log_path("denoise"),
        benchmark:
            bench_path("denoise")
        threads: 1
        resources:
            mem_mb=mem_mb("heavy"),
            runtime=runtime_min("heavy"),
        conda:
            CONDA_ENV
        shell:
            step_cmd("denoise")
