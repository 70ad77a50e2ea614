# The built-in demo cohort: synthetic heads from nilearn's MNI152 template (see voxflow.demo.mri).
DEMO_RAW = os.path.join(OUT, "demo", "raw")
DEMO_TRUTH = os.path.join(OUT, "demo", "truth")
DEMO = SETTINGS.section("demo")


def demo_index(subject):
    """demoNNN is subject NNN of the demo cohort whatever input.subjects lists (its position in that list
    would make input.subjects: [demo003] regenerate demo000); other names get a stable index from the name."""
    import re
    import zlib

    m = re.fullmatch(r"demo(\d+)", subject)
    return int(m.group(1)) if m else 1_000_000 + zlib.crc32(subject.encode())


DEMO_INDEX = {s: demo_index(s) for s in SUBJECTS}


rule demo_subject:
    output:
        **{f"img_{m}": os.path.join(DEMO_RAW, "{subject}", f"{m}.nii.gz") for m in MODS},
        label=os.path.join(DEMO_RAW, "{subject}", "seg.nii.gz"),
        brainmask=os.path.join(DEMO_TRUTH, "{subject}_brainmask.nii.gz"),
    log:
        log_path("demo_subject"),
    benchmark:
        bench_path("demo_subject")
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=mem_mb("light"),
        runtime=runtime_min("light"),
    params:
        io=lambda w, input, output: json.dumps(
            {
                "output": dict(output.items()),
                "config": {
                    "index": DEMO_INDEX[w.subject],
                    "raw_dir": DEMO_RAW,
                    "truth_dir": DEMO_TRUTH,
                    "modalities": MODS,
                    "seed": DEMO["seed"],
                    "spacing_scale": DEMO["spacing_scale"],
                    "fault": DEMO["faults"].get(w.subject),
                },
            }
        ),
    shell:
        step_cmd("demo")
