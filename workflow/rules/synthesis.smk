# Missing or unusable modalities (input.missing: synthesize; voxflow.inputs.missing, voxflow.synth): the synthesis model,
# a 3D conditional GAN trained on the complete training subjects' stores (model/synthesis/), and each subject that
# lacks a modality completed with it in a copy of its store (completed/<subject>.zarr) that inference reads.
INCOMPLETE = COHORT.missing  # subject -> {modality: why}, found at parse time
SYNTH_P = SETTINGS.synthetic_modality_p
# the model is trained when a subject needs it, or when training replaces modalities by its output
SYNTHESIS = bool(TRAINING and (INCOMPLETE or SYNTH_P > 0))
if INCOMPLETE:
    print(missing_summary(COHORT), file=sys.stderr)


def inference_store(subject):
    """The store a subject is predicted from: its completed copy when it lacks a modality."""
    return LAYOUT.completed(subject) if subject in INCOMPLETE else store_input(subject)


rule train_synthesis:
    """The missing-modality synthesis model (voxflow.synth.train): generator.pt, curve.csv, synthesis.json."""
    input:
        stores=LAYOUT.model.stores,
        split=LAYOUT.model.split,
    output:
        generator=LAYOUT.model.synthesis_model,
        curve=LAYOUT.model.synthesis_curve,
        summary=LAYOUT.model.synthesis_summary,
    log:
        LAYOUT.log("train_synthesis", "synthesis"),
    benchmark:
        LAYOUT.benchmark("train_synthesis", "synthesis")
    conda:
        CONDA_ENV
    threads: SETTINGS.synthesis_threads
    resources:
        mem_mb=mem_mb("heavy"),
        runtime=runtime_min("train"),
        gpu=SETTINGS.train_gpus,
    params:
        **step_params(SETTINGS.section("synthesis") | {"modalities": MODS}),
    shell:
        # the segmentation training's processes (DDP under torchrun with train.gpus / train.processes > 1)
        step_cmd("train_synthesis", subject="cohort", nproc=SETTINGS.train_processes)


rule complete_subject:
    """A subject's missing modalities synthesized into a copy of its store, marked synthetic (+ a QC figure)."""
    input:
        store=job_function(lambda wildcards: store_input(wildcards.subject)),
        generator=LAYOUT.model.synthesis_model,
    output:
        zarr=directory(LAYOUT.completed()),
        qc=report(
            LAYOUT.synthesis_qc(),
            caption="../report/synthesis.rst",
            category="Synthesized modalities",
            labels={"subject": "{subject}"},
        ),
    log:
        LAYOUT.log("complete_subject"),
    benchmark:
        LAYOUT.benchmark("complete_subject")
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=mem_mb("heavy"),
        runtime=runtime_min("infer"),
    params:
        **step_params(
            lambda w: {
                "missing": INCOMPLETE.get(w.subject, {}),
                "device": SETTINGS.section("synthesis")["device"],
                "zarr": PRE["zarr"],
            }
        ),
    shell:
        step_cmd("complete_subject")
