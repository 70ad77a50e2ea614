# One job per subject for the whole preprocessing chain (preprocess.granularity: subject, or auto
# above 200 subjects): `voxflow step chain` runs the steps declared in CHAIN (validate ... to_zarr)
# in one process, writing the same files as the per-step rules. Declared here are only the files
# other rules read: the validation table, the zarr store and the QC figures.


CHAIN_WRITES = {v for st in CHAIN for v in st.output.values()}  # patterns, once at parse time


@job_function
def chain_inputs(wildcards):
    """The chain's files that no step of it writes: the raw scans (and the MNI template)."""
    files = {}
    for st in CHAIN:
        inp = st.input(wildcards) if callable(st.input) else st.input
        files.update({f"{st.name}__{k}": v for k, v in inp.items() if v not in CHAIN_WRITES})
    return files


@job_function
def chain_params(wildcards, input, output):
    steps = [st.for_subject(wildcards.subject) for st in CHAIN]
    return json.dumps({"input": dict(input.items()), "output": dict(output.items()), "config": {"steps": steps}})


if FUSED:

    rule preprocess_subject:
        input:
            unpack(chain_inputs),
        output:
            table=VALIDATION_TABLE,
            zarr=directory(TO_ZARR.output["zarr"]),
            **{f"qc_{step}": qc_report(step) for step in QC_STEPS},
        params:
            io=chain_params,
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
