"""The cohort report's page as the report tests read it (through html.parser, not by matching markup strings),
the config its tests build it with, and a QC-like PNG figure."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import numpy as np

from voxflow.core.metrics import BRATS_REGIONS

CONFIG = {"output_dir": "results", "input": {"modalities": ["t1", "flair"], "reference": "t1",
                                             "label_values": [0, 1, 2, 4]},
          "model": {"dim": "3d"}, "evaluate": {"regions": BRATS_REGIONS, "tolerance_mm": 1.0}}


class Page(HTMLParser):
    """Sections (in order) with their text, images, tables and data-subject elements; every src/href; the
    contents of <style> and <script>."""

    def __init__(self, doc: str):
        super().__init__(convert_charrefs=True)
        self.order, self.sections, self.tags, self.links, self.nav = [], {}, [], [], []
        self.style = self.script = ""
        self._sec = self._table = self._row = self._cell = self._raw = None
        self._in_nav = self._in_pre = False
        self.feed(doc)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        self.links += [(tag, k, v) for k, v in attrs if k in ("src", "href")]
        if tag == "nav":
            self._in_nav = True
        elif tag == "a" and self._in_nav:
            self.nav.append(a["href"])
        elif tag in ("style", "script"):
            self._raw = tag
        elif tag == "section":
            self._sec = {"text": "", "visible": "", "imgs": [], "tables": {}, "subjects": []}
            self.sections[a["id"]] = self._sec
            self.order.append(a["id"])
        elif self._sec is None:
            return
        elif tag == "pre":
            self._in_pre = True
        elif tag == "img":
            self._sec["imgs"].append(a)
        elif tag == "table":
            self._table = {"class": a.get("class", ""), "head": [], "rows": []}
            self._sec["tables"][a["id"]] = self._table
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = {"text": "", "v": a.get("data-v"), "parts": []}
        elif tag == "span" and self._cell is not None:
            self._cell["parts"].append("")
        if "data-subject" in a:
            self._sec["subjects"].append(a["data-subject"])

    def handle_endtag(self, tag):
        if tag == "nav":
            self._in_nav = False
        elif tag in ("style", "script"):
            self._raw = None
        elif tag == "section":
            self._sec = None
        elif tag == "pre":
            self._in_pre = False
        elif tag in ("td", "th") and self._cell is not None:
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr" and self._row is not None:
            cells, self._row = self._row, None
            if self._table is not None:
                (self._table["rows"] if self._table["head"] else self._table["head"]).append(cells)
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._raw == "style":
            self.style += data
        elif self._raw == "script":
            self.script += data
        elif self._sec is not None:
            self._sec["text"] += data
            self._sec["visible"] += "" if self._in_pre else data
            if self._cell is not None:
                self._cell["text"] += data
                if self._cell["parts"]:
                    self._cell["parts"][-1] += data

    # helpers
    def table(self, sid: str, tid: str) -> dict:
        t = self.sections[sid]["tables"][tid]
        head = [c["text"] for c in t["head"][0]]
        return {"class": t["class"], "head": head, "rows": [dict(zip(head, r)) for r in t["rows"]]}

    def images(self, sid: str | None = None) -> list[dict]:
        secs = [self.sections[sid]] if sid else self.sections.values()
        return [i for s in secs for i in s["imgs"]]


def voxflow_page(doc: str) -> Page:
    return Page(doc)


class Cards(HTMLParser):
    """The run summary's cards: {key: value} from <div class="card"><b>key</b><span>value</span></div>."""

    def __init__(self, doc: str):
        super().__init__(convert_charrefs=True)
        self.cards, self._key, self._where = {}, None, None
        self.feed(doc)

    def handle_starttag(self, tag, attrs):
        if tag in ("b", "span") and self._where == "card":
            self._where = tag
        elif tag == "div" and dict(attrs).get("class") == "card":
            self._where = "card"

    def handle_endtag(self, tag):
        if tag == "div":
            self._where = None
        elif tag in ("b", "span"):
            self._where = "card" if self._where else None

    def handle_data(self, data):
        if self._where == "b":
            self._key = data
        elif self._where == "span":
            self.cards[self._key] = data


def write_png(path: Path, seed: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 3, figsize=(9, 3))
    for ax in axes:
        ax.imshow(np.random.default_rng(seed).random((32, 28)), cmap="gray")
    fig.savefig(path, dpi=80)
    plt.close(fig)
