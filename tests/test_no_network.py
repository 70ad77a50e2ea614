"""No network access at run time: the tiny demo runs with every non-local connection refused in every
process of the run, and checkpoints are only ever unpickled with torch's weights-only loader.

The guard is a `sitecustomize` module on PYTHONPATH, so Python imports it at the start of every
process the run starts (Snakemake, each `voxflow step` job, their workers). It refuses connections and
name lookups that leave the machine (loopback and unix sockets stay allowed: Snakemake's own local
machinery and torch/dask workers use them) and logs every refused attempt, so that an attempt which
the caller swallowed still fails the test. It covers Python's socket module, not C libraries that open
sockets themselves.
"""

from __future__ import annotations

import ast
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import PROJECT, VENV_BIN
from test_preprocess_workflow import _fail_msg, _small_training_split, run_snakemake

GUARD = r'''
"""Test guard (tests/test_no_network.py): refuse non-local network access in this process."""
import ipaddress
import os
import socket
import sys

_LOG = os.environ.get("VOXFLOW_NET_LOG")
_LOCAL_NAMES = {"localhost", "", socket.gethostname()}


def _note(line):
    if _LOG:
        with open(_LOG, "a") as f:
            f.write(f"{os.getpid()} {line} [{' '.join(sys.argv)[:160]}]\n")


def _local(host):
    if isinstance(host, bytes):
        host = host.decode()
    if host is None or host in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def _deny(what):
    _note(f"BLOCKED {what}")
    raise PermissionError(f"network access blocked by the no-network test: {what}")


def _guard_addr(sock, address, what):
    if sock.family in (socket.AF_INET, socket.AF_INET6) and not _local(address[0]):
        _deny(f"{what} {address!r}")


_connect, _connect_ex, _sendto = socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto
_getaddrinfo, _gethostbyname = socket.getaddrinfo, socket.gethostbyname


def connect(self, address):
    _guard_addr(self, address, "connect")
    return _connect(self, address)


def connect_ex(self, address):
    _guard_addr(self, address, "connect")
    return _connect_ex(self, address)


def sendto(self, data, *args):
    _guard_addr(self, args[-1], "sendto")
    return _sendto(self, data, *args)


def getaddrinfo(host, *args, **kwargs):
    if not _local(host):
        _deny(f"getaddrinfo {host!r}")
    return _getaddrinfo(host, *args, **kwargs)


def gethostbyname(host):
    if not _local(host):
        _deny(f"gethostbyname {host!r}")
    return _gethostbyname(host)


socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto = connect, connect_ex, sendto
socket.getaddrinfo, socket.gethostbyname = getaddrinfo, gethostbyname
_note("guard loaded")
'''


@pytest.fixture
def offline_env(tmp_path, monkeypatch) -> tuple[dict, Path]:
    """The guard on PYTHONPATH of every process this test starts (this one is unaffected: its
    sitecustomize was looked for at its start), and its log: a line per process, one per refusal."""
    guard_dir = tmp_path / "guard"
    guard_dir.mkdir()
    (guard_dir / "sitecustomize.py").write_text(GUARD)
    log = tmp_path / "network.log"
    monkeypatch.setenv("VOXFLOW_NET_LOG", str(log))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in [str(guard_dir), os.environ.get("PYTHONPATH")] if p))
    return dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"), log


def _blocked(log: Path) -> list[str]:
    return [ln for ln in log.read_text().splitlines() if " BLOCKED " in ln] if log.exists() else []


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
    assert len(_blocked(log)) == 3
    # the console script the rules run starts under the guard too
    res = subprocess.run([str(VENV_BIN / "voxflow"), "where", "--configfile", str(PROJECT / "config" / "config.yaml")],
                         env=env, capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    assert any("guard loaded" in ln and "voxflow where" in ln for ln in log.read_text().splitlines())


@pytest.mark.slow
def test_demo_runs_without_network(tmp_path, offline_env):
    """A demo subject (4-6 mm) generated and preprocessed to its zarr store with sockets blocked in every
    process: deepbet's network weights and the MNI152 template come from the installed wheels. N4 is off
    (ANTs, as the registration) to keep the test short."""
    _, log = offline_env
    out = tmp_path / "results"
    # input.on_error: stop: one job per step, so that each step's process is seen starting under the guard
    cfg = _small_training_split({"output_dir": str(out), "input": {"layout": "demo", "modalities": ["t1", "t2"],
                                                                   "on_error": "stop"},
                                 "demo": {"n_subjects": 2, "spacing_scale": 4.0},
                                 "preprocess": {"n4": {"enabled": False}}}, 2)
    subjects = ["demo000"]
    res = run_snakemake(tmp_path, cfg, [str(out / "zarr" / f"{s}.zarr") for s in subjects])
    assert res.returncode == 0, _fail_msg(res)
    for s in subjects:
        assert (out / "zarr" / f"{s}.zarr" / ".zattrs").is_file()
    lines = log.read_text().splitlines()
    assert _blocked(log) == [], "a process tried to reach the network:\n" + "\n".join(_blocked(log))
    # every kind of process ran under the guard: Snakemake itself and each step's job
    assert any("guard loaded [-m -s " in ln and "Snakefile" in ln for ln in lines)  # python -m snakemake
    for step in ("template", "demo", "validate", "ingest", "coreg", "n4", "skullstrip", "mni", "to_zarr"):
        # the rules run `<python> -m voxflow step ...`: at start-up sys.argv reads ['-m', 'step', ...]
        assert sum(f"-m step {step} " in ln and "guard loaded" in ln for ln in lines) == 1, step


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
        tree = ast.parse(path.read_text(), filename=str(path))
        for call in _torch_load_calls(tree):
            kw = {k.arg: k.value for k in call.keywords}
            ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
            calls.append((f"{path.relative_to(PROJECT)}:{call.lineno}", ok))
    assert calls, "no torch.load found in lib/: the test would check nothing"
    assert [c for c, ok in calls if not ok] == [], "torch.load without weights_only=True"
    # pickle, joblib and dill can run code too: lib/ must not load with them
    for path in sorted((PROJECT / "lib").rglob("*.py")):
        text = path.read_text()
        for needle in ("pickle.load", "joblib.load", "dill.load", "allow_pickle=True"):
            assert needle not in text, f"{path}: {needle}"


class _Payload:
    """Unpickling this calls Path.touch(marker): the code-execution a full unpickler allows."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoint_with_pickled_object_is_refused(tmp_path):
    from voxflow.training.train import load_checkpoint, save_checkpoint

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
