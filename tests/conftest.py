"""Shared fixtures: thread limits, the real-data folder, small demo subjects, the bad-input catalogue, the
no-network guard; and the order the tests run in.

Thread limits are set at import, before any test imports ANTs/ITK or torch, so that the suite
behaves on a small shared machine (ITK reads its thread count when it is first loaded).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

from support.paths import SHARED_DATA  # noqa: E402

# Helpers shared by the test modules are in tests/support (imported as `support.<module>`); fixtures are here
# (and, for one folder's tests only, in that folder's conftest.py).


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real scans, never copied into the repository); skips where absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA.resolve()} (only present on the project's machines)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tcga(shared_data) -> Path:
    d = shared_data / "tcga-fg-6692"
    names = ["t1c.nii.gz", "t2.nii.gz", "flair.nii.gz", "t1c_brainmask_hdbet.nii.gz"]
    if not all((d / n).is_file() for n in names):
        pytest.skip(f"{d} lacks one of {names}")
    return d


@pytest.fixture(scope="session")
def demo_subject(tmp_path_factory):
    """Factory: one synthetic demo subject per spacing_scale, generated once per session.

    Returns generate_subject's dict ({"paths": {t1, t2, flair, seg, brainmask, truth}, "truth": {...}}).
    """
    from voxflow.demo.mri import generate_subject

    cache: dict[float, dict] = {}

    def make(spacing_scale: float = 2.0) -> dict:
        if spacing_scale not in cache:
            root = tmp_path_factory.mktemp(f"demo_x{spacing_scale:g}")
            cache[spacing_scale] = generate_subject("demo000", 0, root / "raw", root / "truth",
                                                    spacing_scale=spacing_scale)
        return cache[spacing_scale]

    return make


# --- the bad-input catalogue (support/bad_inputs.py): unit/inputs/test_bad_inputs.py checks `voxflow validate` on
# it, workflow/test_bad_inputs_workflow.py the workflow's ingest; one cohort per test module

@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """data/<subject>/{t1,t2,seg}.nii.gz for two good subjects (4-6 mm demo scans) and one broken subject
    per kind, a sample sheet data/cohort.tsv, and a good scan outside the data root."""
    from support.bad_inputs import make_cohort

    return make_cohort(tmp_path_factory.mktemp("bad_inputs"))


@pytest.fixture(scope="module")
def validated(cohort):
    """Full check (headers and voxels) with two processes, and a headers-only pass in this process."""
    from support.bad_inputs import validate_catalogue

    return validate_catalogue(cohort)


# --- no network (support/network.py): project/test_no_network.py, workflow/test_no_network_workflow.py

@pytest.fixture
def offline_env(tmp_path, monkeypatch) -> tuple[dict, Path]:
    """The guard on PYTHONPATH of every process this test starts (this one is unaffected: its
    sitecustomize was looked for at its start), and its log: a line per process, one per refusal."""
    from support.network import GUARD
    from support.paths import VENV_BIN

    guard_dir = tmp_path / "guard"
    guard_dir.mkdir()
    (guard_dir / "sitecustomize.py").write_text(GUARD)
    log = tmp_path / "network.log"
    monkeypatch.setenv("VOXFLOW_NET_LOG", str(log))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in [str(guard_dir), os.environ.get("PYTHONPATH")] if p))
    return dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"), log


# The longest files first: `make test` runs two xdist workers that take one file at a time in collection
# order, and a long file collected last (alphabetical order: tests/workflow comes last) ran alone at the end,
# minutes after the other worker had finished. The other workflow modules come next, then the rest.
LONGEST_FIRST = ["test_faults.py", "test_slurm.py", "test_qc_faults.py", "test_learn_realdata.py",
                 "test_preprocess_workflow.py", "test_layouts_workflow.py", "test_bad_inputs_workflow.py",
                 "test_no_network_workflow.py", "test_ct_workflow.py",
                 "test_learn_ddp.py", "test_learn_ddp_workflow.py", "test_cohort_exclusion.py", "test_big_cohort.py",
                 "test_config_checks_workflow.py", "test_predict_cli_workflow.py", "test_readme_commands.py"]
WORKFLOW = Path(__file__).resolve().parent / "workflow"


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}

    def key(item) -> int:
        if item.path.name in rank:
            return rank[item.path.name]
        return len(rank) + (WORKFLOW not in item.path.parents)

    items.sort(key=key)  # stable: the rest keep their order
