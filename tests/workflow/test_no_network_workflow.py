"""No network access at run time: the tiny demo runs with every non-local connection refused in every process of
the run (the guard: tests/support/network.py, put on PYTHONPATH by the `offline_env` fixture of tests/conftest.py;
checked on its own in tests/project/test_no_network.py)."""

from __future__ import annotations

import pytest

from support.network import blocked
from support.workflow import fail_msg, run_snakemake, small_training_split


@pytest.mark.slow
def test_demo_runs_without_network(tmp_path, offline_env):
    """A demo subject (4-6 mm) generated and preprocessed to its zarr store with sockets blocked in every
    process: deepbet's network weights and the MNI152 template come from the installed wheels. N4 is off
    (ANTs, as the registration) to keep the test short."""
    _, log = offline_env
    out = tmp_path / "results"
    # input.on_error: stop: one job per step, so that each step's process is seen starting under the guard
    cfg = small_training_split({"output_dir": str(out), "input": {"layout": "demo", "modalities": ["t1", "t2"],
                                                                  "on_error": "stop"},
                                "demo": {"n_subjects": 2, "spacing_scale": 4.0},
                                "preprocess": {"n4": {"enabled": False}}}, 2)
    subjects = ["demo000"]
    res = run_snakemake(tmp_path, cfg, [str(out / "zarr" / f"{s}.zarr") for s in subjects])
    assert res.returncode == 0, fail_msg(res)
    for s in subjects:
        assert (out / "zarr" / f"{s}.zarr" / ".zattrs").is_file()
    lines = log.read_text().splitlines()
    assert blocked(log) == [], "a process tried to reach the network:\n" + "\n".join(blocked(log))
    # every kind of process ran under the guard: Snakemake itself and each step's job
    assert any("guard loaded [-m -s " in ln and "Snakefile" in ln for ln in lines)  # python -m snakemake
    for step in ("template", "demo", "validate", "ingest", "coreg", "n4", "skullstrip", "mni", "to_zarr"):
        # the rules run `<python> -m voxflow step ...`: at start-up sys.argv reads ['-m', 'step', ...]
        assert sum(f"-m step {step} " in ln and "guard loaded" in ln for ln in lines) == 1, step
