# Ingest: store each raw file in canonical orientation (voxflow.preprocess.ingest). Its input is the
# subject's validation table (validate.smk, which depends on the raw files): a subject with problems
# fails here with the table's first row, before reading anything.


def ingest_config(wildcards):
    return {"modalities": MODS, "reference": REF, "label_values": INP["label_values"],
            "modality_types": INP["modality_types"],
            "expected": {"images": COHORT.images[wildcards.subject], "label": COHORT.labels[wildcards.subject]},
            "problem": COHORT.problems.get(wildcards.subject)}  # found by the layout at parse time


INGEST = StepIO("ingest", input={"validation": VALIDATION_TABLE},
                output={**images("ingest"), **({"label": sub_path("ingest", "label.nii.gz")} if HAS_LABEL else {}),
                        "info": sub_path("ingest", "info.json")},
                config=ingest_config)


if not FUSED:
    rule ingest:
        input:
            **INGEST.input,
        output:
            **INGEST.output,
        params:
            **step_params(INGEST.config),
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
