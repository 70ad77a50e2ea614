# Rigid co-registration of every modality to the reference (voxflow.preprocess.coreg).


COREG = StepIO("coreg", input=images("ingest"),
               output={**images("coreg"), **{f"xfm_{m}": sub_path("coreg", f"{m}_to_{REF}.mat") for m in MODS if m != REF},
                       "info": sub_path("coreg", "info.json")},
               config={"modalities": MODS, "reference": REF})


if not FUSED:
    rule coreg:
        input:
            **COREG.input,
        output:
            **COREG.output,
        params:
            **step_params(COREG.config),
        log:
            log_path("coreg"),
        benchmark:
            bench_path("coreg")
        threads: 1
        resources:
            mem_mb=mem_mb("heavy"),
            runtime=runtime_min("heavy"),
        conda:
            CONDA_ENV
        shell:
            step_cmd("coreg")
