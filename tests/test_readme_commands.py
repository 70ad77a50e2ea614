"""The README's commands work exactly as written, from a fresh shell: `env -i` with PATH=/usr/bin:/bin
(no .venv/bin on it), run from the repository root. A rule that called `voxflow` or `torchrun` through
PATH failed there at its first job with `voxflow: command not found`; the rules now run the interpreter
that runs Snakemake (`<python> -m voxflow`)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from conftest import PROJECT

CLEAN_PATH = "/usr/bin:/bin"


def readme_commands() -> list[str]:
    """The commands of the README's bash blocks (continuation lines joined, comments dropped)."""
    text = (PROJECT / "README.md").read_text(encoding="utf-8")
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for cmd in block.replace("\\\n", " ").splitlines():
            cmd = re.sub(r"\s+#.*$", "", cmd).strip()
            if cmd:
                cmds.append(" ".join(cmd.split()))
    return cmds


def _clean_shell(cmd: str, home: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {"PATH": CLEAN_PATH, "HOME": str(home), "LANG": "C.UTF-8"}
    return subprocess.run(["env", "-i", *(f"{k}={v}" for k, v in env.items()), "bash", "-c", cmd], cwd=PROJECT,
                          capture_output=True, text=True, timeout=timeout, check=False)


def _tiny_demo(tmp_path: Path) -> Path:
    cfg = {"output_dir": str(tmp_path / "results"), "input": {"layout": "demo", "modalities": ["t1", "t2"]},
           "demo": {"n_subjects": 3, "spacing_scale": 4.0}, "split": {"n_folds": 2},
           "preprocess": {"n4": {"enabled": False}, "skullstrip": {"method": "none"}, "mni": {"resolution_mm": 2}}}
    path = tmp_path / "my_config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_the_readme_shows_the_commands_tested_here():
    cmds = readme_commands()
    assert "make demo" in cmds and "make test" in cmds
    assert ".venv/bin/snakemake --cores all --configfile my_config.yaml" in cmds
    assert any(c.startswith(".venv/bin/voxflow validate my_config.yaml") for c in cmds), cmds
    assert ".venv/bin/python bench/dag.py" in cmds
    # nothing the README shows relies on PATH: every command is make or a .venv/bin program
    assert all(c.startswith(("make ", ".venv/bin/")) for c in cmds), cmds


def test_snakemake_command_runs_its_jobs_from_a_fresh_shell(tmp_path):
    (cmd,) = [c for c in readme_commands() if c.endswith("--configfile my_config.yaml") and "snakemake" in c]
    cfg = _tiny_demo(tmp_path)
    out = tmp_path / "results"
    target = out / "status" / "subjects" / "demo000.json"
    res = _clean_shell(cmd.replace("my_config.yaml", str(cfg)) + f" -- {target}", tmp_path)  # --: configfiles end
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert (out / "zarr" / "demo000.zarr" / ".zattrs").is_file()
    log = (out / "logs" / "preprocess_subject" / "demo000.log").read_text()
    assert "chain to_zarr subject=demo000" in log


def test_validate_command_from_a_fresh_shell(tmp_path):
    from voxflow.demo.mri import generate_subject

    (cmd,) = [c for c in readme_commands() if c.startswith(".venv/bin/voxflow validate my_config.yaml")]
    generate_subject("s1", 0, tmp_path / "data", tmp_path / "truth", modalities=["t1", "t2"], spacing_scale=4.0)
    cfg = tmp_path / "my_config.yaml"
    cfg.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "results"), "split": {"n_folds": 1},
                                   "input": {"layout": "folders", "root": str(tmp_path / "data"),
                                             "modalities": ["t1", "t2"], "label": "seg"}}))
    cmd = cmd.split(" [")[0].replace("my_config.yaml", str(cfg))
    res = _clean_shell(cmd, tmp_path, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "all 1 subjects OK" in res.stdout


def test_bench_command_from_a_fresh_shell(tmp_path):
    (cmd,) = [c for c in readme_commands() if c == ".venv/bin/python bench/dag.py"]
    res = _clean_shell(f"{cmd} --subjects 30", tmp_path, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert re.fullmatch(r"dag subjects=30 jobs=\d+ dry_run_s=[\d.]+ "
                        r"jobs_after_checkpoint=\d+ after_checkpoint_s=[\d.]+",
                        res.stdout.strip().splitlines()[-1])
