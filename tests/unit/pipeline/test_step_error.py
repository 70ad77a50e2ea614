"""The step of a failed chain, recorded without touching the exception the step raised (voxflow.errors.at_step): an
InputError stays one (a copy with its step), anything else comes in a StepError; the status file's step/file/
problem (failure_record) and the `voxflow ERROR [step]` lines read it back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import voxflow.pipeline.registry
from voxflow.errors import InputError, StepError, at_step, failed_step, one_line
from voxflow.pipeline.chain import failure_record, run_chain


def _steps(monkeypatch, **functions):
    """run_chain's (and `voxflow step`'s) step table replaced by these functions."""
    monkeypatch.setattr(voxflow.pipeline.registry, "step_function", lambda name: functions[name])
    return [{"name": n, "input": {}, "output": {}, "config": {}} for n in functions]


def _raising(exc):
    def step(subject, inp, out, cfg, threads=1):
        raise exc
    return step


def test_a_foreign_exception_comes_in_a_step_error_and_stays_as_raised(monkeypatch):
    original = ValueError("bad shape\nsecond line")
    specs = _steps(monkeypatch, boom=_raising(original))
    with pytest.raises(StepError) as err:
        run_chain("s1", specs, on_error="stop")
    assert err.value.step == "boom" and err.value.cause is original and err.value.__cause__ is original
    assert str(err.value) == str(original) and vars(original) == {}  # nothing set on the foreign exception
    assert failed_step(err.value, "?") == ("boom", original)


def test_an_input_error_stays_one_with_its_step(monkeypatch):
    original = InputError("s1", "/data/t1.nii.gz", "t1 image file is truncated")
    specs = _steps(monkeypatch, ingest=_raising(original))
    with pytest.raises(InputError) as err:
        run_chain("s1", specs, on_error="stop")
    assert str(err.value) == "subject=s1 file=/data/t1.nii.gz: t1 image file is truncated"
    assert err.value.step == "ingest" and original.step is None and err.value.__cause__ is original
    assert (err.value.subject, err.value.file, err.value.problem) == (original.subject, original.file,
                                                                      original.problem)


def test_the_innermost_step_is_the_one_that_failed():
    inner = at_step(KeyError("k"), "inner")
    assert at_step(inner, "outer") is inner and failed_step(inner, "outer")[0] == "inner"
    named = at_step(InputError("s", None, "p"), "inner")
    assert at_step(named, "outer") is named and failed_step(named, "outer") == ("inner", named)
    assert failed_step(OSError("x"), "default")[0] == "default"


@pytest.mark.parametrize("exc, file, problem", [
    (InputError("s1", "/data/mask.nii.gz", "brain mask is empty in MNI space"), "/data/mask.nii.gz",
     "brain mask is empty in MNI space"),
    (ValueError("bad shape\nsecond line"), "-", "ValueError: bad shape"),
    (RuntimeError(""), "-", "RuntimeError"),
    (RuntimeError("x" * 400), "-", "RuntimeError: " + "x" * 300),
])
def test_exclusion_records_step_file_and_one_line_problem(monkeypatch, tmp_path, capsys, exc, file, problem):
    specs = _steps(monkeypatch, mni=_raising(exc))
    status = tmp_path / "status" / "s1.json"
    info = run_chain("s1", specs, on_error="exclude", status=str(status))
    record = {"step": "mni", "file": file, "problem": problem}
    assert info["excluded"] == record == failure_record(at_step(exc, "mni"))
    st = json.loads(Path(status).read_text())
    assert (st["status"], st["step"], st["file"], st["problem"]) == ("excluded", "mni", file, problem)
    assert f"voxflow EXCLUDED [mni] subject=s1 file={file}: {problem}" in capsys.readouterr().err
    assert failure_record(exc)["step"] == "?"  # no chain recorded a step


def test_a_machine_failure_stops_the_chain_with_its_step(monkeypatch, tmp_path):
    original = MemoryError("no memory")
    specs = _steps(monkeypatch, n4=_raising(original))
    with pytest.raises(StepError) as err:
        run_chain("s1", specs, on_error="exclude", status=str(tmp_path / "s1.json"))
    assert err.value.cause is original and not (tmp_path / "s1.json").exists()


def test_one_line():
    assert one_line(ValueError("  bad\nmore")) == "ValueError: bad"
    assert one_line(KeyError()) == "KeyError"


@pytest.mark.parametrize("exc, rc, line", [
    (InputError("s1", "/data/t1.nii.gz", "t1 image file is truncated"), 2,
     "voxflow ERROR [ingest] subject=s1 file=/data/t1.nii.gz: t1 image file is truncated"),
    (ValueError("bad shape\nsecond"), 1, "voxflow ERROR [ingest] subject=s1: ValueError: bad shape"),
])
def test_the_step_command_names_the_chain_step_that_failed(monkeypatch, capsys, exc, rc, line):
    """`voxflow step chain`: a whole chain in one job; its one line names the chain's step, not `chain`."""
    from voxflow.cli import main

    inner = [{"name": "ingest", "input": {}, "output": {}, "config": {}}]

    def chain(subject, inp, out, cfg, threads=1):
        return run_chain(subject, inner, on_error="stop")

    _steps(monkeypatch, chain=chain, ingest=_raising(exc))
    got = main(["step", "chain", "--subject", "s1", "--io", json.dumps({"input": {}, "output": {}, "config": {}})])
    assert got == rc
    assert [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("voxflow ERROR")] == [line]
