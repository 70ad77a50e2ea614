# The built-in demo cohort: synthetic heads from nilearn's MNI152 template (see voxflow.demo.mri).
DEMO = SETTINGS.section("demo")
DEMO_FILES = LAYOUT.demo_files(MODS)  # modality -> scan, seg, brainmask (patterns of {subject})


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
        **{f"img_{m}": DEMO_FILES[m] for m in MODS},
        label=DEMO_FILES["seg"],
        brainmask=DEMO_FILES["brainmask"],
    log:
        LAYOUT.log("demo_subject"),
    benchmark:
        LAYOUT.benchmark("demo_subject")
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
                    "raw_dir": LAYOUT.demo_raw,
                    "truth_dir": LAYOUT.demo_truth,
                    "modalities": MODS,
                    "seed": DEMO["seed"],
                    "spacing_scale": DEMO["spacing_scale"],
                    "fault": DEMO["faults"].get(w.subject),
                },
            }
        ),
    shell:
        step_cmd("demo")
