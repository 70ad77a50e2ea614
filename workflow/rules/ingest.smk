# Ingest: validate each raw file and store it in canonical orientation (voxflow.preprocess.ingest).


def ingest_inputs(wildcards):
    """Only files that exist: a missing one must fail this subject's job, not the whole DAG."""
    files = dict(COHORT.images[wildcards.subject])
    if HAS_LABEL:
        files["label"] = COHORT.labels[wildcards.subject]
    if INP["layout"] == "demo":
        return {k if k == "label" else f"img_{k}": v for k, v in files.items()}
    return {k if k == "label" else f"img_{k}": v for k, v in files.items() if v and os.path.exists(v)}


def ingest_config(wildcards):
    return {"modalities": MODS, "reference": REF, "label_values": INP["label_values"],
            "modality_types": INP["modality_types"],
            "expected": {"images": COHORT.images[wildcards.subject], "label": COHORT.labels[wildcards.subject]},
            "problem": COHORT.problems.get(wildcards.subject)}  # found by the layout at parse time


rule ingest:
    input:
        unpack(ingest_inputs),
    output:
        **images("ingest"),
        **({"label": sub_path("ingest", "label.nii.gz")} if HAS_LABEL else {}),
        info=sub_path("ingest", "info.json"),
    params:
        io=lambda w, input, output: json.dumps(
            {"input": dict(input.items()), "output": dict(output.items()), "config": ingest_config(w)}),
    log:
        log_path("ingest"),
    benchmark:
        bench_path("ingest")
    threads: 1
    resources:
        mem_mb=mem_mb("light"),
        runtime=runtime_min("light"),
    conda:
        CONDA_ENV
    shell:
        step_cmd("ingest")
