# One job per subject for the whole preprocessing chain (preprocess.granularity: subject, or auto
# above 200 subjects): `voxflow step chain` runs the steps declared in CHAIN (validate ... to_zarr)
# in one process, writing the same files as the per-step rules. Declared are only the zarr store and
# the subject's QC folder as one output: Snakemake spends ~0.3 ms per declared file while building the
# DAG, and one QC figure per step was 30 000 files at 10 000 subjects (the figures are report items
# through `patterns`). The validation table is written undeclared (see validate.smk).
# The job always writes the subject's status file (status/subjects/<subject>.json); with input.on_error: exclude a
# failing step does not fail the job: the status names the step and the reason, the subject's store is
# removed, and the cohort goes on without it (checkpoint cohort_status, plan.smk). Dataset-level
# normalization: the chain stops before to_zarr, which runs as its own job after normalization_stats.

# the fused chain's steps, in CHAIN order
FUSED_CHAIN = [st for st in CHAIN if not (NORM_JSON and st.name == "to_zarr")]
CHAIN_WRITES = {v for st in FUSED_CHAIN for v in st.output.values()}  # patterns, once at parse time


@job_function
def chain_inputs(wildcards):
    """The chain's files that no step of it writes: the raw scans (and the MNI template)."""
    files = {}
    for st in FUSED_CHAIN:
        inp = st.input(wildcards) if callable(st.input) else st.input
        files.update({f"{st.name}__{k}": v for k, v in inp.items() if v not in CHAIN_WRITES})
    return files


# The chain's settings (params rerun trigger, see step_params): the preprocessing config and what ingest
# reads of the input section. One value for the cohort, computed once: per subject, the steps' configs
# add only file paths, which are the job's inputs anyway (and a per-job function cost DAG time).
CHAIN_SETTINGS = settings_text({"preprocess": PRE, "input": {k: INP[k] for k in ("modalities", "reference",
                                                                               "label_values", "modality_types")}})


@job_function
def chain_params(wildcards, input, output):
    steps = [st.for_subject(wildcards.subject) for st in FUSED_CHAIN]
    if NORM_JSON:  # to_zarr runs later, as its own job: its check of the mask runs here, inside the chain
        steps.append({"name": "space_mask", "input": {"mask": SPACE_MASK.replace("{subject}", wildcards.subject)},
                      "output": {}, "config": {"space": PRE["space"]}})
    return json.dumps({"input": dict(input.items()), "output": dict(output.items()),
                       "config": {"steps": steps, "on_error": ON_ERROR, "store": store(wildcards.subject)}})


if FUSED:

    rule preprocess_subject:
        input:
            unpack(chain_inputs),
        output:
            status=STATUS,
            **({"zarr": directory(TO_ZARR.output["zarr"])} if STORE_DECLARED and not NORM_JSON else {}),
            qc=report(directory(os.path.join(OUT, "qc", "{subject}")), patterns=["{step}.png"],
                      caption="../report/qc.rst", category="Preprocessing QC", subcategory="{subject}",
                      labels={"subject": "{subject}", "step": "{step}"}),
        params:
            io=chain_params,
            settings=CHAIN_SETTINGS | {"on_error": ON_ERROR},
        log:
            log_path("preprocess_subject"),
        benchmark:
            bench_path("preprocess_subject")
        threads: 1
        resources:
            mem_mb=mem_mb("heavy"),
            runtime=runtime_min("heavy"),
        conda:
            CONDA_ENV
        shell:
            step_cmd("chain")


if not FUSED:

    rule subject_status:
        """One job per step (input.on_error: stop): the subject's status file, written once its store is."""
        input:
            # with dataset-level normalization the subject is done before its store: to_zarr waits for
            # normalization_stats, which waits for the split of the included subjects
            done=SPACE_MASK if NORM_JSON else store("{subject}"),
            validation=VALIDATION_TABLE,
        output:
            status=STATUS,
        localrule: True
        run:
            from voxflow.steps import write_status

            write_status(output.status, wildcards.subject, store=store(wildcards.subject), validation=input.validation)


checkpoint cohort_status:
    """Every subject's status in one file (status/cohort.json): the included subjects, the excluded ones with
    the step that failed and its one-line reason, the validation warnings. A checkpoint: the split, the
    training stores and the predicted subjects are those of the included subjects, known only after it ran."""
    input:
        expand(STATUS, subject=SUBJECTS),
    output:
        cohort=COHORT_STATUS,
    params:
        # test subjects of the config (those not excluded are written): a changed list rewrites the file
        test_subjects={"test_subjects": config["split"]["test_subjects"]},
    localrule: True
    run:
        from voxflow.steps import merge_status

        merge_status(list(input), output.cohort, params.test_subjects["test_subjects"])
