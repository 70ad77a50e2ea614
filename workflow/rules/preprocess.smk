# One job per subject for the whole preprocessing chain (preprocess.granularity: subject, or auto
# above 200 subjects): `voxflow step chain` runs the steps declared in CHAIN (validate ... to_zarr)
# in one process, writing the same files as the per-step rules. Declared are only the zarr store and
# the subject's QC folder as one output: Snakemake spends ~0.3 ms per declared file while building the
# DAG, and one QC figure per step was 30 000 files at 10 000 subjects (the figures are report items
# through `patterns`). The validation table is written undeclared (see validate.smk).


CHAIN_WRITES = {v for st in CHAIN for v in st.output.values()}  # patterns, once at parse time


@job_function
def chain_inputs(wildcards):
    """The chain's files that no step of it writes: the raw scans (and the MNI template)."""
    files = {}
    for st in CHAIN:
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
    steps = [st.for_subject(wildcards.subject) for st in CHAIN]
    return json.dumps({"input": dict(input.items()), "output": dict(output.items()), "config": {"steps": steps}})


if FUSED:

    rule preprocess_subject:
        input:
            unpack(chain_inputs),
        output:
            zarr=directory(TO_ZARR.output["zarr"]),
            qc=report(directory(os.path.join(OUT, "qc", "{subject}")), patterns=["{step}.png"],
                      caption="../report/qc.rst", category="Preprocessing QC", subcategory="{subject}",
                      labels={"subject": "{subject}", "step": "{step}"}),
        params:
            io=chain_params,
            settings=CHAIN_SETTINGS,
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
