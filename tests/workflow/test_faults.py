"""Fault tests: SIGKILL the whole workflow (Snakemake and every job, one process group) during
preprocessing, training, inference and the report, rerun it with the plain command, and compare
with an uninterrupted run of the same tiny demo.

One killed directory goes through the four kills in turn (each rerun is killed at the next stage;
the last one runs to the end), which costs one workflow run instead of four. After each kill,
every output that `snakemake --summary` would keep ("no update") must equal the reference's: a
half-written or stale file under a final name would be accepted there, and show up as a difference.
Comparisons are of the meaningful content, exactly: zarr arrays and attributes, NIfTI voxels and
header bytes, model tensors, PNG pixels, TSV/JSON bytes; what differs between two runs by nature
(log and benchmark files, timing columns of the training curve, the report's date, run-time and
provenance sections, absolute paths of the run directory) is left out, and nothing else.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from support.paths import PROJECT, VENV_BIN
from support.workflow import fail_msg, run_snakemake

SUBJECTS = ["demo000", "demo001", "demo002"]
TIMING = ("it_per_s", "data_wait_fraction")  # curve columns that measure the machine, not the model
UNSTABLE = ("logs", "benchmarks")  # per-job logs and Snakemake benchmarks: timings by nature
# Copied from the reference into the killed run (mtimes kept): the demo scans, the template and the
# preprocessing steps before the MNI registration, so that the killed run starts at the registration
# (the step with the most outputs) instead of redoing the whole preprocessing.
COPIED = ["demo", "template", "validation"] + [f"preprocess/{s}/{step}" for s in SUBJECTS
                                              for step in ("ingest", "coreg", "n4", "brain")] \
    + [f"qc/{s}/{q}.png" for s in SUBJECTS for q in ("n4", "skullstrip")]


def _config(work: Path) -> dict:
    """The tiny demo through the report: 3 subjects at 4x the demo spacing, MNI 2 mm, no skull stripping
    (the cheapest method), one fold of 3 epochs x 3 steps of a 4-feature U-Net on 32^3 patches, a
    checkpoint every epoch (so that a kill lands between two)."""
    return {"output_dir": str(work / "results"),
            # one job per step (input.on_error: stop), so that a kill lands inside the registration step
            "input": {"layout": "demo", "modalities": ["t1", "flair"], "on_error": "stop"},
            "demo": {"n_subjects": len(SUBJECTS), "spacing_scale": 4.0},
            "preprocess": {"mni": {"resolution_mm": 2}, "skullstrip": {"method": "none"}},
            "split": {"n_folds": 2, "folds_to_train": [0]},
            "model": {"base_features": 4, "patch_size": [32, 32, 32], "batch_size": 2},
            "train": {"device": "cpu", "epochs": 3, "iters_per_epoch": 3, "val_patches": 2, "workers": 0,
                      "checkpoint_every": 1, "threads": 1},
            "infer": {"device": "cpu", "tta": False, "overlap": 0.25}}


# --- comparing two run directories ------------------------------------------------------------------------


def _units(out: Path) -> dict[str, Path]:
    """Final-name outputs under `out` by relative path: files, and each zarr store as one unit."""
    units: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(out):
        d = Path(dirpath)
        rel = d.relative_to(out)
        if rel.parts and rel.parts[0] in UNSTABLE:
            dirnames[:] = []
            continue
        for n in [n for n in dirnames if n.endswith(".zarr") and ".tmp-" not in n]:
            units[str(rel / n)] = d / n
            dirnames.remove(n)
        units.update({str(rel / n): d / n for n in filenames if ".tmp-" not in n})
    return units


def _curve_rows(text: str) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(io.StringIO(text))]


def _same_obj(a, b, key: str = "") -> bool:
    """Recursive equality of torch.load results; tensors exactly; the curve without its timing columns."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_obj(a[k], b[k], k) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same_obj(x, y) for x, y in zip(a, b))
    if key == "run_key":  # a stamp of this run directory's stores (paths, modification times): differs by nature
        return isinstance(a, str) and isinstance(b, str) and len(a) == len(b) == 64
    if key == "curve":
        return [{k: v for k, v in r.items() if k not in TIMING} for r in json.loads(a)] == \
               [{k: v for k, v in r.items() if k not in TIMING} for r in json.loads(b)]
    return a == b


def _report_parts(doc: str) -> list[str]:
    """The report without its header (date, run directory) and the sections that hold the date, git
    commit, run times and package versions; the numbers, tables and figures are what is left."""
    doc = re.sub(r"<header>.*?</header>", "", doc, flags=re.S)
    return [m.group(0) for m in re.finditer(r'<section id="([^"]+)">.*?</section>', doc, flags=re.S)
            if m.group(1) not in ("run", "runtime", "provenance")]


def _zarr_difference(a: Path, b: Path, sub) -> str | None:
    import zarr

    ga, gb = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    ma, mb = dict(ga.members(max_depth=None)), dict(gb.members(max_depth=None))
    if ma.keys() != mb.keys():
        return f"members {sorted(ma)} vs {sorted(mb)}"
    for name, x in [("", ga), *ma.items()]:
        y = gb if name == "" else mb[name]
        if sub(json.dumps(dict(x.attrs), sort_keys=True)) != json.dumps(dict(y.attrs), sort_keys=True):
            return f"attributes of '{name}'"
        if isinstance(x, zarr.Array) and not (x.dtype == y.dtype and x.shape == y.shape
                                              and np.array_equal(x[...], y[...])):
            return f"array '{name}'"
    return None


def difference(ref: Path, new: Path, ref_root: str, new_root: str) -> str | None:
    """Why `new` is not the same output as `ref` (None: the same). Paths of the reference's run
    directory inside the reference's content are read as the other run's."""
    def sub(text: str) -> str:  # outputs name their run directory, some as resolved paths
        text = text.replace(str(Path(ref_root).resolve()), str(Path(new_root).resolve()))
        return text.replace(ref_root, new_root)

    if not new.exists():
        return "missing"
    if ref.is_dir():
        if ref.name.endswith(".zarr"):
            return _zarr_difference(ref, new, sub)
        return next((f"{p.relative_to(ref)}: {why}" for p in sorted(ref.rglob("*")) if p.is_file()
                     for why in [difference(p, new / p.relative_to(ref), ref_root, new_root)] if why), None)
    a, b = ref.read_bytes(), new.read_bytes()
    if a == b:
        return None
    name = ref.name
    if name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        x, y = nib.load(str(ref)), nib.load(str(new))
        if x.header.binaryblock != y.header.binaryblock:
            return "NIfTI header"
        xa, ya = np.asanyarray(x.dataobj), np.asanyarray(y.dataobj)
        return None if xa.dtype == ya.dtype and np.array_equal(xa, ya) else "NIfTI voxels"
    if name.endswith(".png"):
        from PIL import Image

        x, y = Image.open(io.BytesIO(a)), Image.open(io.BytesIO(b))
        same = x.size == y.size and x.mode == y.mode and np.array_equal(np.asarray(x), np.asarray(y))
        return None if same else "PNG pixels"
    if name.endswith(".pt"):
        same = _same_obj(torch.load(io.BytesIO(a), weights_only=True), torch.load(io.BytesIO(b), weights_only=True))
        return None if same else "tensors or training state"
    if name.endswith(".npz"):  # numpy stamps the zip entries with the time of writing
        with np.load(io.BytesIO(a)) as x, np.load(io.BytesIO(b)) as y:
            same = x.files == y.files and all(np.array_equal(x[k], y[k]) for k in x.files)
        return None if same else "arrays"
    ta, tb = sub(a.decode("utf-8", "replace")), b.decode("utf-8", "replace")
    if name == "curve.csv":
        return None if _curve_rows(ta) == _curve_rows(tb) else "curve rows"
    if name.endswith(".html"):
        return None if _report_parts(ta) == _report_parts(tb) else "report content"
    return None if ta == tb else "content"


def compare_runs(ref_out: Path, new_out: Path, ref_root: Path, new_root: Path) -> dict[str, str]:
    """{relative path: why} for every output of the reference that the other run lacks or has
    otherwise, and every final-name output that the reference does not have."""
    ref_units, new_units = _units(ref_out), _units(new_out)
    diffs = {rel: why for rel, p in ref_units.items()
             for why in [difference(p, new_out / rel, str(ref_root), str(new_root))] if why}
    diffs.update({rel: "not in the reference run" for rel in new_units.keys() - ref_units.keys()})
    return diffs


# --- killing the workflow -----------------------------------------------------------------------------------


def _command(work: Path, cfg: dict) -> tuple[list[str], dict]:
    """The command and environment of run_snakemake (test_preprocess_workflow), for a Popen."""
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    for var in ("OMP_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, "1")
    return [sys.executable, "-m", "snakemake", "-s", str(PROJECT / "Snakefile"), "--directory", str(work),
            "--configfile", str(work / "config.yaml"), "--cores", "2", "--max-threads", "1"], env


def _survivors(work: Path) -> list[str]:
    """Command lines of live processes that name the run directory (every job's --io does)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if str(work) in cmd and state != "Z" and proc.name != str(os.getpid()):
            found.append(f"{proc.name}: {cmd[:200]}")
    return found


def kill_when(work: Path, cfg: dict, ready, settle: float = 0.0, timeout: float = 600) -> str:
    """Run the workflow in a new session; SIGKILL its whole process group once `ready()` holds
    (`settle` seconds later). Returns Snakemake's output up to the kill."""
    cmd, env = _command(work, cfg)
    log = work / f"killed_{time.time_ns()}.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + timeout
        while not ready():
            assert proc.poll() is None, f"the workflow ended (exit {proc.returncode}) before the kill point:\n" \
                                        f"{log.read_text()[-6000:]}"
            assert time.time() < deadline, "kill point not reached in time"
            time.sleep(0.01)
        time.sleep(settle)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # the workflow had ended by itself (reported above)
            pass
        proc.wait()
    deadline = time.time() + 10
    while _survivors(work) and time.time() < deadline:
        time.sleep(0.1)
    assert not _survivors(work), f"processes of the killed workflow still run: {_survivors(work)}"
    return log.read_text()


def accepted_but_different(work: Path, cfg: dict, ref_work: Path) -> tuple[dict[str, str], dict[str, str]]:
    """After a kill: Snakemake's plan for every output of the DAG (`--summary`, read-only, works on the
    locked directory); returns ({path: why} for outputs it would keep that differ from the reference,
    {path: plan} for outputs present on disk)."""
    res = run_snakemake(work, cfg, [], "--summary")
    assert res.returncode == 0, fail_msg(res)
    rows = [ln.split("\t") for ln in res.stdout.splitlines()[1:] if ln.count("\t") >= 5]
    bad, present = {}, {}
    for row in rows:
        path, plan = Path(row[0]), row[-1]
        if not path.exists():
            continue
        present[str(path)] = plan
        if plan == "no update":
            why = difference(ref_work / path.relative_to(work), path, str(ref_work), str(work))
            if why:
                bad[str(path)] = why
    assert present, res.stdout[-3000:]
    return bad, present


# --- the two runs ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("uninterrupted")
    res = run_snakemake(work, _config(work), [])
    assert res.returncode == 0, fail_msg(res)
    return work


@pytest.fixture(scope="module")
def killed(reference, tmp_path_factory) -> dict:
    """The killed directory: four kills, one per stage, then a plain rerun to the end. Each stage's
    record is taken right after its kill (the next rerun changes the directory)."""
    work = tmp_path_factory.mktemp("killed")
    out, cfg = work / "results", _config(work)
    for rel in COPIED:  # copy2: mtimes kept, nothing looks newer than what was made from it
        src, dst = reference / "results" / rel, out / rel
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    fold = out / "model" / "fold_0"
    ckpt = fold / "checkpoint_latest.pt"
    preds = [out / "predictions" / s / f"{s}_seg_mni.nii.gz" for s in SUBJECTS]

    def mni_started():
        return any(".tmp-" not in p.name for s in SUBJECTS for d in ("xfm", "mni")
                   for p in (out / "preprocess" / s / d).glob("*"))

    def report_running():
        log = out / "logs" / "report" / "report.log"
        return log.exists() and "step report" in log.read_text()

    stages = {"preprocessing": (mni_started, 0.0), "training": (ckpt.exists, 0.0),
              "inference": (lambda: any(p.exists() for p in preds), 0.0), "report": (report_running, 0.3)}
    rec: dict = {"work": work, "out": out}
    for i, (stage, (ready, settle)) in enumerate(stages.items()):
        if i:  # a killed Snakemake leaves its directory lock: what `snakemake --unlock` removes (5-10 s less)
            shutil.rmtree(work / ".snakemake" / "locks")
        text = kill_when(work, cfg, ready, settle)
        if stage == "preprocessing":  # the copied steps are not redone (else this test costs a full run)
            assert not re.search(r"rule (demo_subject|validate|ingest|coreg|n4|skullstrip|template):", text), \
                text[-3000:]
        bad, present = accepted_but_different(work, cfg, reference)
        r = rec[stage] = {"output": text, "bad": bad, "present": present}
        if stage == "training":
            r["epoch"] = int(torch.load(ckpt, weights_only=True)["epoch"])
            r["curve"] = (fold / "curve.csv").read_text()
            r["final"] = (fold / "model_final.pt").exists()
        if stage == "inference":
            r["train_log"] = (out / "logs" / "train" / "fold_0.log").read_text()  # of the run that resumed
    unlock = run_snakemake(work, cfg, [], "--unlock")  # the user's way, for the last rerun
    assert unlock.returncode == 0, fail_msg(unlock)
    rec["rerun"] = run_snakemake(work, cfg, [])
    assert rec["rerun"].returncode == 0, fail_msg(rec["rerun"])
    rec["diffs"] = compare_runs(reference / "results", out, reference, work)
    return rec


def _diffs_under(killed: dict, *prefixes: str) -> dict[str, str]:
    return {k: v for k, v in killed["diffs"].items() if k.startswith(prefixes)}


# --- the stages --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_kill_during_preprocessing(killed):
    rec = killed["preprocessing"]
    assert rec["bad"] == {}, "outputs that Snakemake would keep differ from an uninterrupted run"
    # a registration killed after writing part of its outputs (its QC image, written last, is missing):
    # what it left under final names is redone, not kept
    caught = 0
    for s in SUBJECTS:
        mine = {p: plan for p, plan in rec["present"].items() if re.search(rf"/preprocess/{s}/(mni|xfm)\b", p)}
        if mine and not any(p.endswith(f"/qc/{s}/mni.png") for p in rec["present"]):
            caught += 1
            assert set(mine.values()) == {"update pending"}, mine
    assert caught >= 1, rec["present"]
    # first the kill then the whole preprocessing again: stores, intermediates, transforms and QC identical
    assert _diffs_under(killed, "preprocess", "zarr", "qc", "template", "demo", "validation") == {}
    assert len(list((killed["out"] / "zarr").glob("demo*.zarr"))) == len(SUBJECTS)


@pytest.mark.slow
def test_kill_during_training_resumes_from_checkpoint(killed):
    rec, out = killed["training"], killed["out"]
    assert rec["bad"] == {}
    epochs = _config(out)["train"]["epochs"]
    assert 1 <= rec["epoch"] < epochs and not rec["final"], "not killed in the middle of the training"
    pending = {Path(p).name for p, plan in rec["present"].items() if "/model/fold_0/" in p and plan == "update pending"}
    assert "curve.png" in pending  # rewritten every epoch, under its final name: redone, not kept
    # the rerun resumed from the checkpoint of the kill, and kept the epochs before it (their timings too)
    log = killed["inference"]["train_log"]
    assert f"resuming from {out / 'model' / 'fold_0' / 'checkpoint_latest.pt'} at epoch {rec['epoch']}" in log, log
    before = list(csv.DictReader(io.StringIO(rec["curve"])))
    after = list(csv.DictReader(io.StringIO((out / "model" / "fold_0" / "curve.csv").read_text())))
    assert [int(r["epoch"]) for r in after] == list(range(1, epochs + 1))
    assert after[:rec["epoch"]] == before[:rec["epoch"]]
    # same weights, optimizer state, validation predictions and curve as a fold trained without a break
    assert _diffs_under(killed, "model") == {}


@pytest.mark.slow
def test_kill_during_inference(killed):
    rec = killed["inference"]
    assert rec["bad"] == {}
    preds = {Path(p).name: plan for p, plan in rec["present"].items() if "/predictions/" in p and p.endswith(".nii.gz")}
    assert any(n.endswith("_seg_mni.nii.gz") for n in preds), "killed before the prediction job wrote anything"
    if not any(n.endswith("_seg.nii.gz") for n in preds):  # killed between its MNI and native-space outputs
        assert set(preds.values()) == {"update pending"}, preds
    assert _diffs_under(killed, "predictions", "evaluation") == {}


@pytest.mark.slow
def test_kill_during_report(killed):
    rec, out = killed["report"], killed["out"]
    assert rec["bad"] == {}
    html = str(out / "report" / "report.html")
    assert rec["present"].get(html, "update pending") == "update pending"
    assert _diffs_under(killed, "report") == {}
    assert len(_report_parts((out / "report" / "report.html").read_text())) >= 5  # the compared sections


@pytest.mark.slow
def test_rerun_after_kill_is_the_plain_command(killed):
    """No --rerun-incomplete: the default profile (profiles/default -> workflow/profiles/default) sets it;
    without it every rerun after a kill stopped with IncompleteFilesException."""
    text = killed["rerun"].stdout + killed["rerun"].stderr
    assert "Using workflow specific profile" in text and "profiles/default" in text, text[-2000:]
    assert killed["diffs"] == {}
