"""Config validation (voxflow.settings.validate_config): one-line errors that name the culprit, defaults filled."""

from __future__ import annotations

import copy
import re

import pytest
import yaml

from support.paths import PROJECT, SCHEMA


def _validate(cfg: dict) -> dict:
    from voxflow.settings import validate_config

    return validate_config(copy.deepcopy(cfg), SCHEMA)


def _error(cfg: dict) -> str:
    from voxflow.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        _validate(cfg)
    return str(info.value)


def _allowed_list(msg: str, what: str) -> list:
    m = re.search(rf"allowed {what}: (\[.*?\])", msg)
    assert m, f"no 'allowed {what}' list in {msg!r}"
    return yaml.safe_load(m.group(1))


def test_unknown_top_level_key():
    msg = _error({"output_dir": "x", "preprocesss": {}})
    assert "'preprocesss'" in msg
    allowed = _allowed_list(msg, "keys")
    assert {"input", "output_dir", "preprocess", "demo"} <= set(allowed) and "preprocesss" not in allowed


def test_unknown_nested_key_names_section_and_allowed_keys():
    msg = _error({"preprocess": {"n4": {"fit_spacing": 4}}})
    assert "'preprocess.n4'" in msg and "'fit_spacing'" in msg
    assert set(_allowed_list(msg, "keys")) == {"enabled", "fit_spacing_mm", "iterations", "spline_distance_mm"}


@pytest.mark.parametrize("section, key, bad, allowed", [
    ("skullstrip", "method", "bet", ["deepbet", "template", "none"]),
    ("mni", "transform", "bspline", ["rigid", "affine", "syn"]),
    ("zarr", "compressor", "gzip", ["zstd", "lz4"]),
])
def test_bad_enum_value_names_allowed_values(section, key, bad, allowed):
    msg = _error({"preprocess": {section: {key: bad}}})
    assert f"'preprocess.{section}.{key}'" in msg and repr(bad) in msg
    assert _allowed_list(msg, "values") == allowed


def test_every_problem_reported_one_per_line():
    msg = _error({"input": {"layout": "flat"}, "preprocess": {"mni": {"resolution_mm": 3}}, "bogus": 1})
    lines = msg.splitlines()
    assert len(lines) == 3 and all(line.startswith("config error at ") for line in lines)


def _schema_defaults(schema: dict, prefix: tuple = ()):
    """(path, default) of every leaf key that declares a default, at any depth."""
    for key, sub in schema.get("properties", {}).items():
        path = prefix + (key,)
        if "properties" in sub:
            yield from _schema_defaults(sub, path)
        elif "default" in sub:
            yield path, sub["default"]


def test_defaults_filled():
    given = {"input": {"modalities": ["t2", "flair"]}, "preprocess": {"n4": {"enabled": False}}}
    cfg = _validate(given)
    assert cfg["input"]["modalities"] == ["t2", "flair"]  # given values kept
    assert cfg["preprocess"]["n4"]["enabled"] is False
    assert cfg["input"]["reference"] == "t2"  # not a schema default: the first modality
    leaves = [(path, d) for path, d in _schema_defaults(yaml.safe_load(SCHEMA.read_text()))
              if path not in {("input", "modalities"), ("preprocess", "n4", "enabled"), ("input", "reference")}]
    assert len(leaves) > 30
    for path, default in leaves:  # every other key, at every depth, holds the schema's default
        value = cfg
        for key in path:
            assert key in value, f"default of {'.'.join(path)} not filled"
            value = value[key]
        assert value == default, f"{'.'.join(path)} = {value!r}, schema default {default!r}"
    # a few that the preprocessing relies on, spelled out
    assert cfg["input"]["layout"] == "demo" and cfg["output_dir"] == "results"
    assert cfg["preprocess"]["skullstrip"]["method"] == "deepbet"
    assert cfg["preprocess"]["zarr"]["compressor"] == "lz4" and cfg["preprocess"]["zarr"]["chunk"] == 64


def test_cross_field_checks():
    assert "input.reference" in _error({"input": {"modalities": ["t1", "t2"], "reference": "flair"}})
    assert "input.root" in _error({"input": {"layout": "folders"}})


def test_shipped_config_is_valid():
    cfg = _validate(yaml.safe_load((PROJECT / "config" / "config.yaml").read_text()))
    assert cfg["input"]["reference"] in cfg["input"]["modalities"]
