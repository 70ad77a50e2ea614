"""The report's templates (voxflow/report/templates): they ship with the package, the page inlines report.css and
report.js unchanged, every value is escaped, and a section that failed renders as its note."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path

import jinja2
import pytest

from support.paths import PROJECT
from voxflow.report.build import environment, render

TEMPLATES = ("report.html.j2", "report.css", "report.js")


def _context(**sections) -> dict:
    return {"title": "voxflow cohort report", "run_dir": "/runs/a", "date": "2030-01-02 03:04 UTC",
            "colors": {"reference": "#22c55e", "prediction": "#ef4444"},
            "sections": [{"id": sid, "title": sid.title(), "data": data} for sid, data in sections.items()]}


class Texts(HTMLParser):
    """Elements' tags and attributes, and the text of the page outside <style> and <script>."""

    def __init__(self, doc: str):
        super().__init__(convert_charrefs=True)
        self.tags, self.text, self._raw = [], "", False
        self.feed(doc)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._raw = tag in ("style", "script")

    def handle_endtag(self, tag):
        self._raw = False

    def handle_data(self, data):
        self.text += "" if self._raw else data


def test_templates_are_package_resources():
    files = resources.files("voxflow.report") / "templates"
    for name in TEMPLATES:
        assert (files / name).is_file(), name
    env = environment()
    assert isinstance(env.loader, jinja2.PackageLoader) and env.autoescape is True


def test_page_inlines_css_and_js_unchanged():
    doc = render(_context(run={"cards": [["subjects", "3"]]}))
    files = resources.files("voxflow.report") / "templates"
    for name in ("report.css", "report.js"):
        assert (files / name).read_text(encoding="utf-8").strip() in doc, name
    assert doc.startswith("<!DOCTYPE html>")
    tags = Texts(doc).tags
    assert [t for t, _ in tags].count("style") == 1 and [t for t, _ in tags].count("script") == 1
    assert not [a for t, a in tags if t in ("script", "img", "link") and ("src" in a or "href" in a)]


def test_values_are_escaped():
    evil = '<script>alert("x")</script>'
    table = {"id": "excluded-table", "columns": ["subject", evil], "sortable": True,
             "rows": [[{"text": evil, "v": None, "sub": None, "warn": False},
                       {"text": "1", "v": '1" onclick="x', "sub": evil, "warn": True}]]}
    doc = render(_context(excluded={"count": 1, "table": table}, run={"cards": [[evil, evil]]}))
    page = Texts(doc)
    assert [t for t, _ in page.tags].count("script") == 1  # only the page's own sorter
    assert page.text.count(evil) == 5  # shown as text: header, cell, second line, card key and value
    td = [a for t, a in page.tags if t == "td" and "data-v" in a]
    assert td == [{"data-v": '1" onclick="x'}]  # an attribute value, not a new attribute


def test_failed_section_renders_its_note_and_strict_context():
    doc = render(_context(curves={"error": "This section could not be built: OSError: disk"}))
    assert "This section could not be built: OSError: disk" in Texts(doc).text
    with pytest.raises(jinja2.UndefinedError):  # a missing value is an error, not an empty string
        render(_context(runtime={"tabel": None}))


def test_wheel_ships_the_templates(tmp_path):
    """A wheel built from pyproject.toml (a copy of the package, so the checkout gets no build folders) holds
    the templates and py.typed."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(PROJECT / name, src / name)
    shutil.copytree(PROJECT / "lib", src / "lib", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    code = ("import sys; from setuptools import build_meta as b; "
            "print(b.build_wheel(sys.argv[1]))")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "dist")], cwd=src, capture_output=True, text=True,
                       timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    wheel = tmp_path / "dist" / r.stdout.strip().splitlines()[-1]
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in TEMPLATES:
        assert f"voxflow/report/templates/{name}" in names, sorted(n for n in names if "templates" in n)
    assert "voxflow/py.typed" in names and "voxflow/report/build.py" in names
    assert "voxflow/settings/config.schema.yaml" in names
    assert Path(wheel).name.startswith("voxflow-")
