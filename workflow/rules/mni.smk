# Registration to nilearn's MNI152 template; forward and inverse transforms kept
# (voxflow.preprocess.mni).
TEMPLATE = os.path.join(OUT, "template", f"mni152_{PRE['mni']['resolution_mm']}mm.nii.gz")
TEMPLATE_MASK = os.path.join(OUT, "template", f"mni152_{PRE['mni']['resolution_mm']}mm_mask.nii.gz")


rule template:
    output:
        image=TEMPLATE,
        mask=TEMPLATE_MASK,
    params:
        **step_params({"resolution_mm": PRE["mni"]["resolution_mm"]}),
    log:
        os.path.join(OUT, "logs", "template", "mni152.log"),
    benchmark:
        os.path.join(OUT, "benchmarks", "template", "mni152.tsv")
    threads: 1
    resources:
        mem_mb=mem_mb("light"),
        runtime=runtime_min("light"),
    conda:
        CONDA_ENV
    shell:
        step_cmd("template", subject="template")


MNI = StepIO("mni", input={**images("brain"), "mask": sub_path("brain", "brain_mask.nii.gz"),
                           **({"label": sub_path("ingest", "label.nii.gz")} if HAS_LABEL else {}),
                           "template": TEMPLATE},
             output={**images("mni"), "mask": sub_path("mni", "brain_mask.nii.gz"),
                     **({"label": sub_path("mni", "label.nii.gz")} if HAS_LABEL else {}),
                     "xfm": os.path.join(OUT, "preprocess", "{subject}", "xfm"), "qc": qc_path("mni")},
             config=PRE["mni"] | {"reference": REF})
if SPACE_STEP != "mni":
    CHAIN.remove(MNI)


if not FUSED:
    rule mni:
        input:
            **MNI.input,
        output:
            **MNI.outputs("qc", "xfm"),
            xfm=directory(MNI.output["xfm"]),
            qc=qc_report("mni"),
        params:
            **step_params(MNI.config),
        log:
            log_path("mni"),
        benchmark:
            bench_path("mni")
        threads: 1
        resources:
            mem_mb=mem_mb("heavy"),
            runtime=runtime_min("heavy"),
        conda:
            CONDA_ENV
        shell:
            step_cmd("mni")
