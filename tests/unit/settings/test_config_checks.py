"""Config mistakes found at load time (voxflow.settings.load: check_subject_ids, check_config;
voxflow.settings.loader.read_config): one case per mistake of the catalogue (support/config_cases.py), each with
its exact one-line message and `voxflow validate`'s exit code (2), and the config file's own problems (the same
lines from `snakemake -n`, for a representative subset: tests/workflow/test_config_checks_workflow.py).

The cohorts are tiny synthetic NIfTI files (8x8x8): nothing here reads voxels beyond `--headers-only`."""

from __future__ import annotations

import subprocess

import pytest

from support.config_cases import BASE, CASES, GOOD, folders_config, validate_lines, write_config, write_folders
from support.paths import PROJECT, VENV_BIN


@pytest.mark.parametrize("case", list(CASES))
def test_validate_reports_config_error(case, tmp_path, capsys):
    cfg, expected = CASES[case](tmp_path)
    rc, lines = validate_lines(write_config(tmp_path, cfg), capsys)
    assert (rc, lines) == (2, expected)


def test_input_root_inside_output_dir_is_accepted(tmp_path, capsys):
    """Data kept in output_dir (outside the folders the workflow writes) is fine: the demo's raw data lives in
    output_dir/demo/raw, config/examples/liver_ct.yaml keeps its cohort in output_dir/data."""
    root = write_folders(tmp_path / "results" / "demo" / "raw", GOOD)
    assert validate_lines(write_config(tmp_path, folders_config(tmp_path, input={"root": str(root)})),
                          capsys) == (0, [])
    demo = {"output_dir": str(tmp_path / "results"), "input": {"layout": "demo"}}
    assert validate_lines(write_config(tmp_path, demo), capsys) == (0, [])


# --- the config file itself -------------------------------------------------------------------------------------------

FILES = {
    "list": ("- a\n- b\n", "config error: {path} is not a mapping (it holds a list); a config file holds key: value "
                           "pairs such as output_dir: results"),
    "scalar": ("42\n", "config error: {path} is not a mapping (it holds a single value); a config file holds key: "
                       "value pairs such as output_dir: results"),
    "empty": ("# nothing\n", "config error: {path} is not a mapping (it is empty); a config file holds key: value "
                             "pairs such as output_dir: results"),
    "invalid_yaml": ("input: [a, b\n", "config error: {path} is not valid YAML: expected ',' or ']', but got "
                                       "'<stream end>' (line 2, column 1)"),
    "missing": (None, "config error: {path} does not exist"),
    "directory": ("dir", "config error: {path} is a directory, not a config file"),
}


@pytest.mark.parametrize("kind", list(FILES))
def test_validate_config_file_problems(kind, tmp_path):
    """Run as a user runs it (the console script): exit 2 and one line, never a traceback."""
    content, message = FILES[kind]
    path = tmp_path / "config.yaml"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_text(content)
    res = subprocess.run([str(VENV_BIN / "voxflow"), "validate", str(path), "--base-config", BASE, "-q"],
                         cwd=PROJECT, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    errors = [ln for ln in res.stderr.splitlines() if "ERROR" in ln]
    assert errors == [f"voxflow ERROR [config] {message.format(path=path)}"], res.stderr
