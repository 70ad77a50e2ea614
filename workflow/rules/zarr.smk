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
