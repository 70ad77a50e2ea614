"""The one config loader (voxflow.settings.load / load_config_dict): YAML over config/config.yaml as the Snakefile
reads it, the packaged schema's defaults filled, one-line errors, the same Settings as the Snakefile resolves; and
the schema found as package data by a non-editable install, run from outside the repository."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

from support.paths import PROJECT, SCHEMA

BASE = PROJECT / "config" / "config.yaml"


def _write(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_defaults_filled_from_the_packaged_schema(tmp_path):
    from voxflow.settings import Loaded, load

    loaded = load(_write(tmp_path / "c.yaml", {"output_dir": str(tmp_path / "out")}), base=None)
    assert isinstance(loaded, Loaded)
    schema = yaml.safe_load(SCHEMA.read_text())
    assert set(loaded.config) == set(schema["properties"])  # every section, filled
    assert loaded.config["resources"] == {k: v["default"] for k, v in
                                          schema["properties"]["resources"]["properties"].items()}
    assert loaded.config["input"]["layout"] == "demo" and loaded.config["input"]["reference"] == "t1"
    assert loaded.settings.config is loaded.config and loaded.settings.output_dir == str(tmp_path / "out")
    assert loaded.cohort.subjects == list(loaded.settings.subjects)
    with pytest.raises(AttributeError):
        loaded.config = {}  # type: ignore[misc]  # frozen


def test_packaged_schema_is_the_file_and_validates_like_it():
    from voxflow.settings import validate_config
    from voxflow.settings.schema import packaged_schema, schema_text

    with packaged_schema() as path:
        assert path.read_text() == SCHEMA.read_text() == schema_text()
    assert validate_config({}) == validate_config({}, SCHEMA)


def test_config_file_over_the_base_as_snakemake_merges_it(tmp_path):
    from voxflow.settings import load

    user = {"output_dir": str(tmp_path / "out"), "split": {"n_folds": 2}, "demo": {"n_subjects": 6}}
    loaded = load(_write(tmp_path / "c.yaml", user), base=BASE)
    base = yaml.safe_load(BASE.read_text())
    assert loaded.config["split"]["n_folds"] == 2  # the user's value
    assert loaded.config["split"]["folds_to_train"] == base["split"]["folds_to_train"]  # the base's, same section
    assert loaded.config["train"]["epochs"] == base["train"]["epochs"]
    assert loaded.settings.subjects == tuple(f"demo{i:03d}" for i in range(6))
    # no config file: the base alone (`snakemake` without --configfile)
    assert load(base=BASE).config["output_dir"] == base["output_dir"]


def test_load_config_dict_validates_the_given_dict_in_place(tmp_path):
    from voxflow.settings import load, load_config_dict

    cfg = {"output_dir": str(tmp_path / "out"), "input": {"modalities": ["t1", "t2"]}}
    loaded = load_config_dict(cfg)
    assert loaded.config is cfg and cfg["preprocess"]["space"] == "mni"  # Snakemake's `config` is the filled one
    assert loaded.settings == load(_write(tmp_path / "c.yaml", {"output_dir": str(tmp_path / "out"),
                                                                "input": {"modalities": ["t1", "t2"]}}),
                                   base=None).settings


@pytest.mark.parametrize("cfg, message", [
    ({"input": {"layot": "demo"}},
     "config error at 'input': Additional properties are not allowed ('layot' was unexpected); allowed keys: "),
    ({"preprocess": {"space": "talairach"}},
     "config error at 'preprocess.space': 'talairach' is not allowed; allowed values: ['mni', 'native']"),
    ({"train": {"epochs": 0}}, "config error at 'train.epochs': 0 is less than the minimum of 1"),
    ({"input": {"reference": "t2", "modalities": ["t1", "flair"]}},
     "config error at 'input.reference': 't2' is not one of input.modalities ['t1', 'flair']"),
])
def test_a_mistake_is_one_config_error_line(cfg, message, tmp_path):
    from voxflow.errors import ConfigError
    from voxflow.settings import load, load_config_dict

    with pytest.raises(ConfigError) as info:
        load(_write(tmp_path / "c.yaml", cfg), base=BASE)
    text = str(info.value)
    assert "\n" not in text and text.startswith(message), text
    with pytest.raises(ConfigError) as again:  # the Snakefile's entry says the same
        load_config_dict(copy.deepcopy(cfg))
    assert str(again.value) == text


def test_a_config_file_that_is_no_mapping_is_one_line(tmp_path):
    from voxflow.errors import ConfigError
    from voxflow.settings import load

    (tmp_path / "c.yaml").write_text("- a\n")
    with pytest.raises(ConfigError, match=r"^config error: .*c\.yaml is not a mapping \(it holds a list\)"):
        load(tmp_path / "c.yaml")


def test_settings_sections_are_the_config_dicts(tmp_path):
    """What the rules pass to a step's params is the config's very dict: its JSON (Snakemake's params trigger)
    is that of the config section."""
    from voxflow.settings import load

    s = load(_write(tmp_path / "c.yaml", {"output_dir": str(tmp_path / "o")}), base=BASE).settings
    for name in s.SECTIONS:
        assert s.section(name) is s.config[name]
    with pytest.raises(KeyError):
        s.section("output_dir")
    assert s.dask_scheduler == s.config["dask"]["scheduler"] and s.train_threads == s.config["train"]["threads"]
    assert s.runtime_min("light") == s.config["resources"]["runtime_min_light"]


# The Snakefile's own SETTINGS (workflow/rules/common.smk, built from the `config` Snakemake merged) next to
# load(configfile) in one process, run from the project root as `snakemake --configfile` is.
SNAKEFILE_SETTINGS = """
import sys
from pathlib import Path

from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, ResourceSettings

from voxflow.settings import load

configfile = sys.argv[1]
with SnakemakeApi() as api:
    wf = api.workflow(resource_settings=ResourceSettings(cores=1), snakefile=Path("Snakefile"),
                      config_settings=ConfigSettings(configfiles=[Path(configfile)]))._workflow
    settings = wf.globals["SETTINGS"]
    loaded = load(configfile)
    print("SAME" if settings == loaded.settings and wf.globals["COHORT"].subjects == loaded.cohort.subjects
          else f"DIFFERENT:\\n{settings}\\n{loaded.settings}")
"""


@pytest.mark.parametrize("example", [None, "demo_configurations", "demo_missing_modality"])
def test_the_same_settings_as_the_snakefile_resolves(example, tmp_path):
    cfg = yaml.safe_load((PROJECT / "config" / "examples" / f"{example}.yaml").read_text()) if example else {}
    cfg["output_dir"] = str(tmp_path / "results")
    cfg.setdefault("split", {})["test_fraction"] = 0.3
    configfile = _write(tmp_path / "c.yaml", cfg)
    res = subprocess.run([sys.executable, "-c", SNAKEFILE_SETTINGS, str(configfile)], cwd=PROJECT,
                         capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0 and res.stdout.strip().splitlines()[-1:] == ["SAME"], res.stdout + res.stderr


# --- a non-editable install, used from outside the repository ------------------------------------------------------

def _install_copy(tmp_path: Path) -> Path:
    """The project installed (not editable) into a scratch venv whose only other path is this environment's
    site-packages (the dependencies; a plain path line, so its editable-install .pth is not read and the
    repository's lib/ stays off sys.path). Built from a copy: pip writes egg-info next to the sources."""
    import shutil

    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(PROJECT / name, src / name)
    shutil.copytree(PROJECT / "lib", src / "lib", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    deps = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    Path(purelib, "_voxflow_test_deps.pth").write_text("".join(f"{d}\n" for d in deps))
    res = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                          "--no-build-isolation", "--no-cache-dir", str(src)],
                         capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    return venv


def test_installed_package_finds_its_schema_outside_the_repository(tmp_path):
    from voxflow.demo.mri import generate_subject

    venv = _install_copy(tmp_path)
    work = tmp_path / "elsewhere"  # no config/config.yaml here: the packaged schema's defaults alone
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    for i, s in enumerate(["s1", "s2"]):
        generate_subject(s, i, work / "data", work / "truth", modalities=["t1", "t2"], spacing_scale=4.0)
    _write(work / "cfg.yaml", {"output_dir": str(work / "results"), "split": {"n_folds": 1},
                               "input": {"layout": "folders", "root": str(work / "data"), "modalities": ["t1", "t2"],
                                         "label": "seg"}})
    probe = ("import json, sys, voxflow\n"
             "from voxflow.settings import load\n"
             "from voxflow.settings.schema import packaged_schema\n"
             "loaded = load('cfg.yaml')\n"
             "with packaged_schema() as schema:\n"
             "    print(json.dumps({'voxflow': voxflow.__file__, 'schema': str(schema), 'path': sys.path,\n"
             "                      'subjects': loaded.cohort.subjects,\n"
             "                      'space': loaded.config['preprocess']['space']}))")
    res = subprocess.run([str(venv / "bin" / "python"), "-c", probe], cwd=work, env=env, capture_output=True,
                         text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    seen = json.loads(res.stdout.strip().splitlines()[-1])
    assert Path(seen["voxflow"]).is_relative_to(venv) and Path(seen["schema"]).is_relative_to(venv), seen
    assert not [p for p in seen["path"] if p and Path(p).resolve() == (PROJECT / "lib").resolve()], seen["path"]
    assert seen["subjects"] == ["s1", "s2"] and seen["space"] == "mni"
    # the console script: the same config, every subject's files checked; a mistake, one line
    res = subprocess.run([str(venv / "bin" / "voxflow"), "validate", "cfg.yaml", "-q", "--headers-only", "-j", "1"],
                         cwd=work, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0 and "all 2 subjects OK" in res.stdout, res.stdout + res.stderr
    _write(work / "bad.yaml", {"input": {"layout": "folders", "root": str(work / "data"), "lable": "seg"}})
    res = subprocess.run([str(venv / "bin" / "voxflow"), "validate", "bad.yaml", "-q"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=300, check=False)
    errors = [ln for ln in res.stderr.splitlines() if "ERROR" in ln]
    assert res.returncode == 2 and len(errors) == 1, res.stdout + res.stderr
    assert errors[0].startswith("voxflow ERROR [config] config error at 'input': Additional properties are not "
                                "allowed ('lable' was unexpected)"), errors
