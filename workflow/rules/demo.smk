# The built-in demo cohort: synthetic heads from nilearn's MNI152 template (see voxflow.demo).
DEMO_RAW = os.path.join(OUT, "demo", "raw")
DEMO_TRUTH = os.path.join(OUT, "demo", "truth")
DEMO_INDEX = {s: i for i, s in enumerate(SUBJECTS)}


rule demo_subject:
    output:
        **{f"img_{m}": os.path.join(DEMO_RAW, "{subject}", f"{m}.nii.gz") for m in MODS},
        label=os.path.join(DEMO_RAW, "{subject}", "seg.nii.gz"),
        brainmask=os.path.join(DEMO_TRUTH, "{subject}_brainmask.nii.gz"),
    params:
        io=lambda w, input, output: json.dumps({"output": dict(output.items()), "config": {
            "index": DEMO_INDEX[w.subject], "raw_dir": DEMO_RAW, "truth_dir": DEMO_TRUTH,
            "modalities": MODS, "seed": config["demo"]["seed"],
            "spacing_scale": config["demo"]["spacing_scale"]}}),
    log:
        log_path("demo_subject"),
    benchmark:
        bench_path("demo_subject")
    threads: 1
    resources:
        mem_mb=RES["mem_mb_light"],
    conda:
        CONDA_ENV
    shell:
        step_cmd("demo")
