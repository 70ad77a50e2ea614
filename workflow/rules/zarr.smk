# Intensity normalization and the per-subject zarr store (voxflow.preprocess.normalize, .store), from the
# MNI or the native-space grid; dataset-level methods read normalization.json (workflow/rules/intensity.smk).


TO_ZARR = StepIO("to_zarr", input={**images(SPACE_STEP), "mask": SPACE_MASK,
                                   **({"label": sub_path(SPACE_STEP, "label.nii.gz")} if HAS_LABEL else {}),
                                   "xfm": SPACE_XFM, **({"normalization": NORM_JSON} if NORM_JSON else {})},
                 output={"zarr": os.path.join(OUT, "zarr", "{subject}.zarr")},
                 config=lambda w: PRE["normalize"] | PRE["zarr"] | {"modalities": MODS, "space": PRE["space"],
                                                                    "native_reference": raw_reference(w)})


if not FUSED:
    rule to_zarr:
        input:
            **TO_ZARR.input,
        output:
            zarr=directory(TO_ZARR.output["zarr"]),
        params:
            **step_params(TO_ZARR.config),
        log:
            log_path("to_zarr"),
        benchmark:
            bench_path("to_zarr")
        threads: 1
        resources:
            mem_mb=mem_mb("light"),
            runtime=runtime_min("light"),
        conda:
            CONDA_ENV
        shell:
            step_cmd("to_zarr")


if FUSED and NORM_JSON:
    # The fused chain stops before to_zarr (dataset-level normalization needs the cohort's statistics first):
    # the subject's intermediate files are written by that chain, undeclared, so the job names its status file
    # and finds the files in --io.
    @job_function
    def to_zarr_io(wildcards, input, output):
        files = TO_ZARR.for_subject(wildcards.subject)
        return json.dumps({"input": {**files["input"], **dict(input.items())}, "output": dict(output.items()),
                           "config": files["config"]})

    rule to_zarr:
        input:
            status=STATUS,
            normalization=NORM_JSON,
        output:
            zarr=directory(TO_ZARR.output["zarr"]),
        params:
            io=to_zarr_io,
            settings=step_params(TO_ZARR.config)["settings"],
        log:
            log_path("to_zarr"),
        benchmark:
            bench_path("to_zarr")
        threads: 1
        resources:
            mem_mb=mem_mb("light"),
            runtime=runtime_min("light"),
        conda:
            CONDA_ENV
        shell:
            step_cmd("to_zarr")
