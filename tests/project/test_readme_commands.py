"""The commands of the README and of the docs pages (docs/*.md) work exactly as written, from a fresh shell:
`env -i` with PATH=/usr/bin:/bin (no .venv/bin on it), run from the repository root. A rule that called
`voxflow` or `torchrun` through PATH failed there at its first job with `voxflow: command not found`; the
rules now run the interpreter that runs Snakemake (`<python> -m voxflow`). The README links every page."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from support.paths import PROJECT

CLEAN_PATH = "/usr/bin:/bin"


def doc_pages() -> list[Path]:
    """The README and every page of docs/, README first."""
    return [PROJECT / "README.md", *sorted((PROJECT / "docs").glob("*.md"))]


def bash_commands(text: str) -> list[str]:
    """The commands of a page's bash blocks (continuation lines joined, comments dropped)."""
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for cmd in block.replace("\\\n", " ").splitlines():
            cmd = re.sub(r"\s+#.*$", "", cmd).strip()
            if cmd:
                cmds.append(" ".join(cmd.split()))
    return cmds


def commands_by_page() -> dict[str, list[str]]:
    """Each page's commands, by its path from the repository root (README.md, docs/<page>.md)."""
    return {p.relative_to(PROJECT).as_posix(): bash_commands(p.read_text(encoding="utf-8")) for p in doc_pages()}


def documented_commands() -> list[str]:
    """The commands of the README and of every docs page, in page order."""
    return [cmd for cmds in commands_by_page().values() for cmd in cmds]


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


def test_the_documentation_shows_the_commands_tested_here():
    pages = commands_by_page()
    cmds = documented_commands()
    readme = pages["README.md"]
    assert "make demo" in readme and "make test" in readme
    assert ".venv/bin/snakemake --cores all --configfile my_config.yaml" in readme
    assert any(c.startswith(".venv/bin/voxflow validate my_config.yaml") for c in readme), readme
    assert ".venv/bin/python bench/dag.py" in cmds
    # the tests below find each of these by its text: exactly one command of all the pages
    for found in (lambda c: c.endswith("--configfile my_config.yaml") and "snakemake" in c,
                  lambda c: c.startswith(".venv/bin/voxflow validate my_config.yaml"),
                  lambda c: c == ".venv/bin/python bench/dag.py"):
        assert len([c for c in cmds if found(c)]) == 1, cmds
    # nothing the pages show relies on PATH: every command is make or a .venv/bin program
    assert all(c.startswith(("make ", ".venv/bin/")) for c in cmds), {p: c for p, c in pages.items() if c}


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return {_anchor(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


def test_the_readme_links_every_docs_page_and_each_link_resolves():
    text = (PROJECT / "README.md").read_text(encoding="utf-8")
    to_docs = [t for t in LINK.findall(text) if t.removeprefix("./").startswith("docs/")]
    linked = {t.removeprefix("./").split("#")[0] for t in to_docs}
    pages = {p.relative_to(PROJECT).as_posix() for p in (PROJECT / "docs").glob("*.md")}
    assert pages, "no docs/*.md page"
    assert not pages - linked, f"docs pages the README does not link: {sorted(pages - linked)}"
    assert all((PROJECT / t).is_file() for t in linked), [t for t in sorted(linked) if not (PROJECT / t).is_file()]


def test_every_relative_link_of_the_pages_resolves():
    """A link from one page to another (or to a file of the repository) and its #anchor, if any, exist."""
    broken = []
    for page in doc_pages():
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists() or (anchor and dest.suffix == ".md" and anchor not in _anchors(dest)):
                broken.append(f"{page.relative_to(PROJECT)}: {target}")
    assert not broken, broken


def test_snakemake_command_runs_its_jobs_from_a_fresh_shell(tmp_path):
    (cmd,) = [c for c in documented_commands() if c.endswith("--configfile my_config.yaml") and "snakemake" in c]
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

    (cmd,) = [c for c in documented_commands() if c.startswith(".venv/bin/voxflow validate my_config.yaml")]
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
    (cmd,) = [c for c in documented_commands() if c == ".venv/bin/python bench/dag.py"]
    res = _clean_shell(f"{cmd} --subjects 30", tmp_path, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert re.fullmatch(r"dag subjects=30 jobs=\d+ dry_run_s=[\d.]+ "
                        r"jobs_after_checkpoint=\d+ after_checkpoint_s=[\d.]+",
                        res.stdout.strip().splitlines()[-1])
