# A subject's preprocessing chain (validate -> ingest -> coreg [-> denoise] -> n4 -> skullstrip -> mni | native
# -> to_zarr). The chain is defined once, as data, in voxflow.pipeline.chain.build_chain (its steps, their files and config,
# ordered by their files); this file turns that one list into rules: one rule per step (preprocess.granularity:
# step, or auto with input.on_error: stop), or one job per subject running every step in one process (subject,
# or auto with exclude). Both write the same files. The step functions: voxflow.pipeline.registry's table.
from voxflow.inputs.cohort import QC_SUBJECT_PATTERN
from voxflow.pipeline.chain import RawSubject, build_chain, fused_steps, raw_files, space_mask_path, step_spec
from voxflow.core.layout import qc_figure_name

CHAIN = build_chain(SETTINGS.chain, OUT, NORM_JSON)
CHAIN_STEP = {st.name: st for st in CHAIN}
SPACE_STEP = SETTINGS.chain.space_step
SPACE_MASK = space_mask_path(OUT, SETTINGS.chain)
TEMPLATE = LAYOUT.template(PRE["mni"]["resolution_mm"])
DEMO_LAYOUT = INP["layout"] == "demo"


def raw_subject(subject):
    """A subject's raw files as the layout found them (voxflow.settings.loader.build_cohort, once at parse time)."""
    return RawSubject(
        images=COHORT.images[subject],
        label=COHORT.labels[subject] if HAS_LABEL else None,
        problem=COHORT.problems.get(subject),
        missing=COHORT.missing.get(subject),
    )


def subject_spec(st, subject):
    return step_spec(st, subject, raw_subject(subject), demo=DEMO_LAYOUT)


rule template:
    """nilearn's MNI152 template and brain mask at the registration's resolution (no download)."""
    output:
        **TEMPLATE,
    log:
        LAYOUT.log("template", "mni152"),
    benchmark:
        LAYOUT.benchmark("template", "mni152")
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=mem_mb("light"),
        runtime=runtime_min("light"),
    params:
        **step_params({"resolution_mm": PRE["mni"]["resolution_mm"]}),
    shell:
        step_cmd("template", subject="template")


# --- one rule per step ---------------------------------------------------------------------------------------------


def step_rule_inputs(st):
    """The step's input files for a job (validate: only the raw files that exist, so that a missing one fails
    that subject, not the DAG)."""
    if st.raw_inputs:
        return job_function(lambda wildcards: raw_files(raw_subject(wildcards.subject), DEMO_LAYOUT))
    return job_function(lambda wildcards: {k: v.replace("{subject}", wildcards.subject) for k, v in st.inputs.items()})


def step_rule_outputs(st):
    outputs = {}
    for key, path in st.outputs.items():
        if key == st.qc:
            outputs[key] = report(
                path,
                caption="../report/qc.rst",
                category="Preprocessing QC",
                subcategory="{subject}",
                labels={"subject": "{subject}", "step": st.name},
            )
        else:
            outputs[key] = directory(path) if key in st.folders else path
    return outputs


def step_rule_params(st):
    """io: the job's files and config as JSON for `voxflow step`; settings: the config alone (Snakemake's params
    rerun trigger ignores params computed from a job's files), see common.smk step_params."""
    if st.subject_config is None:
        return step_params(dict(st.config))
    return step_params(lambda wildcards: subject_spec(st, wildcards.subject)["config"])


if not FUSED:
    for _st in CHAIN:

        rule:
            name:
                _st.name
            input:
                unpack(step_rule_inputs(_st)),
            output:
                **step_rule_outputs(_st),
            log:
                LAYOUT.log(_st.name),
            benchmark:
                LAYOUT.benchmark(_st.name)
            priority: 10 if _st.raw_inputs else 0  # every subject's validation first: its table comes early
            conda:
                CONDA_ENV
            threads: 1
            resources:
                mem_mb=mem_mb(_st.weight),
                runtime=runtime_min(_st.weight),
            params:
                **step_rule_params(_st),
            shell:
                # `{rule}`, not _st.name: Snakemake evaluates a rule's shell command when the job runs, after
                # the loop has moved on (the other directives are evaluated here); the rule is named after its step
                step_cmd("{rule}")

    rule subject_status:
        """One job per step (input.on_error: stop): the subject's status file, written once its store is."""
        input:
            # with dataset-level normalization the subject is done before its store: to_zarr waits for
            # normalization_stats, which waits for the split of the included subjects
            done=SPACE_MASK if NORM_JSON else store("{subject}"),
            validation=LAYOUT.validation_table(),
            scores=CHAIN_STEP["qc_scores"].outputs["scores"],
        output:
            status=LAYOUT.status(),
        localrule: True
        run:
            from voxflow.status import write_status

            # kept as written: a run block's text is its rule's code rerun trigger
            # fmt: off
            write_status(output.status, wildcards.subject, store=store(wildcards.subject), validation=input.validation)
            # fmt: on


# --- one job per subject -------------------------------------------------------------------------------------------
# Declared are only the subject's status file, its QC folder (the figures are report items through `patterns`) and,
# where it can be, the store: Snakemake spends ~0.3 ms per declared file while building the DAG, and one QC figure
# per step was 30 000 files at 10 000 subjects. The job always writes the status file; with input.on_error: exclude
# a failing step does not fail the job: the status names the step and the reason, the subject's files are removed,
# and the cohort goes on without it (checkpoint cohort_status). Dataset-level normalization: the chain stops before
# to_zarr, which runs as its own job after normalization_stats.
CHAIN_WRITES = {p for st in CHAIN for p in st.outputs.values()}  # patterns, once at parse time
# The chain's settings (params rerun trigger): the preprocessing config and what the steps read of the input
# section; per subject the steps add only file paths, which are the job's inputs anyway.
CHAIN_SETTINGS = settings_text(SETTINGS.chain.to_json())


@job_function
def chain_inputs(wildcards):
    """The chain's files that no step of it writes: the raw scans and the MNI template."""
    files = {f"raw__{k}": v for k, v in raw_files(raw_subject(wildcards.subject), DEMO_LAYOUT).items()}
    for st in CHAIN:
        if not (NORM_JSON and st.name == "to_zarr"):
            files.update({f"{st.name}__{k}": v for k, v in st.inputs.items() if v not in CHAIN_WRITES})
    return files


@job_function
def chain_params(wildcards, input, output):
    s = wildcards.subject
    raw = raw_subject(s)
    return json.dumps(
        {
            "input": dict(input.items()),
            "output": dict(output.items()),
            "config": {
                "settings": SETTINGS.chain.to_json(),
                "has_label": HAS_LABEL,
                "root": OUT,
                "normalization": NORM_JSON,
                "demo": DEMO_LAYOUT,
                "on_error": ON_ERROR,
                "store": store(s),
                "raw": {"images": raw.images, "label": raw.label, "problem": raw.problem, "missing": raw.missing},
            },
        }
    )


if FUSED:

    rule preprocess_subject:
        input:
            unpack(chain_inputs),
        output:
            **({"zarr": directory(store("{subject}"))} if STORE_DECLARED and not NORM_JSON else {}),
            status=LAYOUT.status(),
            qc=report(
                directory(LAYOUT.qc_dir()),
                patterns=[qc_figure_name("{step}")],
                caption="../report/qc.rst",
                category="Preprocessing QC",
                subcategory="{subject}",
                labels={"subject": "{subject}", "step": "{step}"},
            ),
        log:
            LAYOUT.log("preprocess_subject"),
        benchmark:
            LAYOUT.benchmark("preprocess_subject")
        wildcard_constraints:
            subject=QC_SUBJECT_PATTERN,  # its output qc/{subject} must not claim the cohort's qc/flags.tsv
        conda:
            CONDA_ENV
        threads: 1
        resources:
            mem_mb=mem_mb("heavy"),
            runtime=runtime_min("heavy"),
        params:
            io=chain_params,
            settings=CHAIN_SETTINGS | {"on_error": ON_ERROR},
        shell:
            step_cmd("chain")


if FUSED and NORM_JSON:
    # The fused chain stops before to_zarr (dataset-level normalization needs the cohort's statistics first):
    # the subject's intermediate files are written by that chain, undeclared, so the job names its status file
    # and finds the files in --io.
    @job_function
    def to_zarr_io(wildcards, input, output):
        spec = subject_spec(CHAIN_STEP["to_zarr"], wildcards.subject)
        return json.dumps(
            {
                "input": {**spec["input"], **dict(input.items())},
                "output": dict(output.items()),
                "config": spec["config"],
            }
        )

    rule to_zarr:
        input:
            status=LAYOUT.status(),
            normalization=NORM_JSON,
        output:
            zarr=directory(store("{subject}")),
        log:
            LAYOUT.log("to_zarr"),
        benchmark:
            LAYOUT.benchmark("to_zarr")
        conda:
            CONDA_ENV
        threads: 1
        resources:
            mem_mb=mem_mb("light"),
            runtime=runtime_min("light"),
        params:
            io=to_zarr_io,
            settings=step_params(lambda wildcards: subject_spec(CHAIN_STEP["to_zarr"], wildcards.subject)["config"])[
                "settings"
            ],
        shell:
            step_cmd("to_zarr")


checkpoint cohort_status:
    """Every subject's status in one file (status/cohort.json): the included subjects, the excluded ones with
    the step that failed and its one-line reason, the validation warnings. A checkpoint: the split, the
    training stores and the predicted subjects are those of the included subjects, known only after it ran."""
    input:
        expand(LAYOUT.status(), subject=SUBJECTS),
    output:
        cohort=LAYOUT.cohort_status,
    localrule: True
    params:
        # test subjects of the config (those not excluded are written): a changed list rewrites the file
        test_subjects={"test_subjects": SETTINGS.section("split")["test_subjects"]},
        # input.missing: synthesize: the subjects that lack a modality (never trained on, completed before inference)
        incomplete={"incomplete": COHORT.missing},
    run:
        from voxflow.status import merge_status

        # kept as written: a run block's text is its rule's code rerun trigger (this checkpoint's reruns everything)
        # fmt: off
        merge_status(list(input), output.cohort, params.test_subjects["test_subjects"],
                     params.incomplete["incomplete"])
        # fmt: on
