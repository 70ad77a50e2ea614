# Intensity normalization and the per-subject zarr store (voxflow.preprocess.normalize, .store).


rule to_zarr:
    input:
        **images("mni"),
        mask=sub_path("mni", "brain_mask.nii.gz"),
        **({"label": sub_path("mni", "label.nii.gz")} if HAS_LABEL else {}),
        xfm=os.path.join(OUT, "preprocess", "{subject}", "xfm"),
    output:
        zarr=directory(os.path.join(OUT, "zarr", "{subject}.zarr")),
    params:
        io=io_params(lambda w: PRE["normalize"] | PRE["zarr"] | {"modalities": MODS, "native_reference": raw_reference(w)}),
    log:
        log_path("to_zarr"),
    benchmark:
        bench_path("to_zarr")
    threads: 1
    resources:
        mem_mb=RES["mem_mb_light"],
    conda:
        CONDA_ENV
    shell:
        step_cmd("to_zarr")
