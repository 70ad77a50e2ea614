"""No network access at run time, and checkpoints are only ever unpickled with torch's weights-only loader.

The guard (tests/support/network.py) is a `sitecustomize` module on PYTHONPATH (the `offline_env` fixture of
tests/conftest.py), so Python imports it at the start of every process the run starts (Snakemake, each
`voxflow step` job, their workers). It refuses connections and name lookups that leave the machine (loopback and
unix sockets stay allowed: Snakemake's own local machinery and torch/dask workers use them) and logs every refused
attempt, so that an attempt which the caller swallowed still fails the test. It covers Python's socket module, not
C libraries that open sockets themselves. Here the guard is checked on its own; the tiny demo runs under it in
tests/workflow/test_no_network_workflow.py.
"""
from __future__ import annotations

import ast
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from support.network import blocked
from support.paths import PROJECT, VENV_BIN


def test_guard_refuses_remote_and_allows_loopback(offline_env):
    env, log = offline_env
    probe = (
        "import socket\n"
        "srv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen(1)\n"
        "socket.create_connection(srv.getsockname(), timeout=5).close()\n"  # loopback: allowed
        "for attempt in (lambda: socket.create_connection(('192.0.2.1', 80), timeout=5),\n"  # TEST-NET-1
        "                lambda: socket.getaddrinfo('pypi.org', 443),\n"
        "                lambda: socket.socket().connect_ex(('2001:db8::1', 80, 0, 0))):\n"
        "    try:\n"
        "        attempt(); print('CONNECTED')\n"
        "    except PermissionError as exc:\n"
        "        print('REFUSED', exc)\n"
    )
    res = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60,
                         check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("REFUSED network access blocked") == 3 and "CONNECTED" not in res.stdout, res.stdout
    assert len(blocked(log)) == 3
    # the console script the rules run starts under the guard too
    res = subprocess.run([str(VENV_BIN / "voxflow"), "where", "--configfile", str(PROJECT / "config" / "config.yaml")],
                         env=env, capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    assert any("guard loaded" in ln and "voxflow where" in ln for ln in log.read_text().splitlines())


# --- checkpoints: weights only -----------------------------------------------------------------------------------

def _torch_load_calls(tree: ast.AST):
    """Calls of torch.load, also as `load` imported from torch."""
    bare = any(isinstance(n, ast.ImportFrom) and n.module == "torch" and any(a.name == "load" for a in n.names)
               for n in ast.walk(tree))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            if (isinstance(f, ast.Attribute) and f.attr == "load" and isinstance(f.value, ast.Name)
                    and f.value.id == "torch") or (bare and isinstance(f, ast.Name) and f.id == "load"):
                yield node


def test_every_torch_load_is_weights_only():
    calls = []
    for path in sorted((PROJECT / "lib").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for call in _torch_load_calls(tree):
            kw = {k.arg: k.value for k in call.keywords}
            ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
            calls.append((f"{path.relative_to(PROJECT)}:{call.lineno}", ok))
    assert calls, "no torch.load found in lib/: the test would check nothing"
    assert [c for c, ok in calls if not ok] == [], "torch.load without weights_only=True"
    # pickle, joblib and dill can run code too: lib/ must not load with them
    for path in sorted((PROJECT / "lib").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for needle in ("pickle.load", "joblib.load", "dill.load", "allow_pickle=True"):
            assert needle not in text, f"{path}: {needle}"


class _Payload:
    """Unpickling this calls Path.touch(marker): the code-execution a full unpickler allows."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoint_with_pickled_object_is_refused(tmp_path):
    from voxflow.nn.checkpoints import load_checkpoint, save_checkpoint

    cpu = torch.device("cpu")
    good = tmp_path / "good.pt"
    save_checkpoint(good, model={"w": torch.ones(2)}, epoch=3)
    assert load_checkpoint(good, cpu)["epoch"] == 3  # a plain checkpoint loads

    marker, evil = tmp_path / "pwned", tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.ones(2)}, "epoch": 3, "extra": _Payload(marker)}, evil)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(evil, cpu)
    assert not marker.exists()
    # the payload is real: a full unpickler runs it (what weights_only=True prevents)
    torch.load(evil, map_location=cpu, weights_only=False)
    assert marker.exists()
