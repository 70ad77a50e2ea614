"""Input validation before the DAG does work: `voxflow validate <config>` (the command: voxflow.settings.command)
and the per-subject `validate` rule.

Both run `check_subject`, which applies ingest's own checks (`voxflow.inputs.images.read_header` and
`read_image`, `voxflow.inputs.validate.check_label_grid` and `check_label_values`) to every file
of a subject and collects one (subject, file, problem, severity) row per broken file instead of
stopping at the first, so a cohort's problems come out as one table. Severity "error": ingest would
fail on it; "warning": valid but suspicious (a modality covering a thin slab, a label without
foreground), ingested all the same. Each file's header is checked first (milliseconds: a bad
dimension, spacing, orientation or label grid is found without decompressing the voxels); the
voxel checks (truncated data, NaN/Inf, constant image, label values) follow unless
`voxels=False`. Subjects are checked in a process pool, one subject per task, so memory stays
at one subject per worker whatever the cohort size.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import NamedTuple

import numpy as np

from voxflow.inputs.images import Grid, InputError, read_header, read_image
from voxflow.core.atomic import atomic_path
from voxflow.errors import first_line, subject_problem
from voxflow.inputs.images import grid_summary
from voxflow.inputs.images import same_grid
import SimpleITK as sitk

COLUMNS = ("subject", "file", "problem", "severity")
SEVERITIES = ("error", "warning")
THIN_SLAB_FRACTION = 0.25  # a modality covering less of the reference's extent along a world axis: warning
THIN_SLAB_SLICES = 8  # fewer voxels along an axis: warning


class Row(NamedTuple):
    """One table row; Row(subject, file, problem) is an error, as in the 3-column tables before severities."""

    subject: str
    file: str
    problem: str
    severity: str = "error"


def error_rows(rows: list[Row]) -> list[Row]:
    """The rows that stop ingest."""
    return [r for r in rows if r.severity != "warning"]


def warning_rows(rows: list[Row]) -> list[Row]:
    """The rows of valid but suspicious files, which ingest accepts."""
    return [r for r in rows if r.severity == "warning"]


def _grid(img) -> Grid:
    return Grid(img.GetSize(), img.GetSpacing(), img.GetOrigin(), img.GetDirection())


def _check(rows: list[Row], subject: str, path: str, fn, *args, **kw):
    """fn's result, or None with its problem appended to rows (one line, also for unexpected errors)."""
    try:
        return fn(*args, **kw)
    except InputError as exc:
        rows.append(Row(exc.subject, exc.file, exc.problem))
    except Exception as exc:  # noqa: BLE001 - a reader crash is this file's problem, not the cohort's
        rows.append(Row(subject, str(path), f"unexpected error while checking: {type(exc).__name__}: "
                                            f"{first_line(exc, 200)}"))
    return None


def _read(path: str, subject: str, what: str, voxels: bool, allow_constant: bool = False):
    """(grid, image or None): header checks first; the voxels only when asked (always for DICOM folders)."""
    grid = read_header(path, subject, what=what)
    if voxels or grid is None:
        img = read_image(path, subject, what=what, allow_constant=allow_constant)
        return _grid(img), img
    return grid, None


def _extent(grid) -> np.ndarray:
    """The physical extent (mm) of a grid's voxel box along the world axes x, y, z."""
    d = np.abs(np.array(grid.GetDirection(), dtype=np.float64).reshape(3, 3))
    return d @ (np.array(grid.GetSize(), dtype=np.float64) * np.array(grid.GetSpacing(), dtype=np.float64))


def thin_slab(grid, reference_grid, what: str, reference: str) -> str | None:
    """A warning when the image covers a thin slab: fewer than THIN_SLAB_SLICES voxels along an axis, or less
    than THIN_SLAB_FRACTION of the reference image's extent along a world axis (reference_grid: None for the
    reference itself)."""
    size = tuple(grid.GetSize())
    if min(size) < THIN_SLAB_SLICES:
        return f"{what} has {min(size)} slices along axis {'ijk'[size.index(min(size))]} (size {size}): a thin slab?"
    if reference_grid is None:
        return None
    mine, ref = _extent(grid), _extent(reference_grid)
    for axis, (m, r) in enumerate(zip(mine, ref)):
        if m < THIN_SLAB_FRACTION * r:
            return (f"{what} covers {m:.1f} mm along world axis {'xyz'[axis]}, {100 * m / r:.0f}% of the "
                    f"{r:.1f} mm of the reference image ({reference}): a thin slab?")
    return None


def check_subject(subject: str, images: dict[str, str], label: str | None, reference: str,
                  label_values=None, problem=None, voxels: bool = True) -> list[Row]:
    """Every problem of one subject, in ingest's order (modalities, then the label): ingest's first
    error is the first error row. `problem` is the (file, problem) the input layout found at parse time.
    Warnings (severity "warning": a modality covering a thin slab, a label without foreground) follow
    the file's errors, if any, and do not stop ingest."""
    from voxflow.inputs.validate import check_label_grid, check_label_values

    rows: list[Row] = []
    if problem:
        rows.append(Row(subject, str(problem[0] or "-"), str(problem[1])))
    grids = {}
    for mod, path in images.items():
        if not path:
            if not problem:  # the layout's problem already names it
                rows.append(Row(subject, "-", f"modality '{mod}' is missing for this subject"))
            continue
        got = _check(rows, subject, path, _read, path, subject, f"{mod} image", voxels)
        if got:
            grids[mod] = got[0]
    for mod, grid in grids.items():
        warning = thin_slab(grid, grids.get(reference) if mod != reference else None, f"{mod} image", reference)
        if warning:
            rows.append(Row(subject, str(images[mod]), warning, "warning"))
    if label:
        got = _check(rows, subject, label, _read, label, subject, "label", voxels, allow_constant=True)
        if got:
            (grid, img), n = got, len(rows)
            if reference in grids:  # else the reference's own row says why
                _check(rows, subject, label, check_label_grid, grid, grids[reference], subject, label)
            if img is not None and len(rows) == n:
                allowed = set(label_values) if label_values else None
                _check(rows, subject, label, check_label_values, img, subject, label, allowed)
            if img is not None and len(rows) == n and not _any_voxel(img):
                rows.append(Row(subject, str(label), "label has no foreground (all voxels are 0)", "warning"))
    return rows


def _any_voxel(img) -> bool:
    """Whether any voxel of a SimpleITK image is nonzero."""
    import SimpleITK as sitk

    return bool(np.any(sitk.GetArrayViewFromImage(img)))


def _init_worker() -> None:
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)  # the pool's processes are the parallelism


def _task(args: tuple) -> list[Row]:
    subject, kw = args
    return check_subject(subject, **kw)


class _Progress:
    """tqdm on a terminal; elsewhere (logs, CI) a counter line on stderr every ~10% or 30 s."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.done, self.bar, self.last = total, 0, None, time.time()
        self.enabled = enabled and total >= 20  # a handful of subjects needs no progress report
        if self.enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit="subject", desc="validate", file=sys.stderr)
            except ImportError:
                pass

    def update(self, bad: int) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(problems=bad, refresh=False)
        elif self.enabled and (self.done == self.total or time.time() - self.last > 30
                               or self.done % max(1, self.total // 10) == 0):
            self.last = time.time()
            print(f"validate: {self.done}/{self.total} subjects checked, {bad} with problems", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def validate_cohort(cohort, inp: dict, jobs: int = 1, voxels: bool = True, progress: bool = True) -> list[Row]:
    """check_subject over a `voxflow.inputs.cohort.Cohort` (jobs > 1: a process pool); rows in cohort order."""
    missing = getattr(cohort, "missing", {}) or {}
    tasks = [(s, dict(images={m: p for m, p in cohort.images[s].items() if m not in missing.get(s, {})},
                      label=cohort.labels.get(s), reference=inp["reference"],
                      label_values=inp["label_values"], problem=cohort.problems.get(s), voxels=voxels))
             for s in cohort.subjects]
    results: dict[str, list[Row]] = {}
    bar, bad = _Progress(len(tasks), progress), 0
    try:
        if jobs <= 1 or len(tasks) <= 1:
            for t in tasks:
                results[t[0]] = _task(t)
                bad += bool(error_rows(results[t[0]]))
                bar.update(bad)
        else:
            with ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), initializer=_init_worker) as pool:
                futures = {pool.submit(_task, t): t[0] for t in tasks}
                for fut in as_completed(futures):
                    results[futures[fut]] = fut.result()
                    bad += bool(error_rows(results[futures[fut]]))
                    bar.update(bad)
    finally:
        bar.close()
    return [row for s in cohort.subjects for row in results.get(s, [])]


# --- tables ------------------------------------------------------------------------------------------------------

def _clean(value) -> str:
    return " ".join(str(value).split())  # one line per row, no tabs inside a TSV field


def write_table(rows: list[Row], path: str | os.PathLike) -> None:
    """TSV with a header line, written atomically (an empty table = no problems). Rows of 3 values are errors."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text("\n".join("\t".join(_clean(v) for v in r) for r in [COLUMNS, *map(_row, rows)]) + "\n")


def _row(r) -> Row:
    row = Row(*r)
    if row.severity not in SEVERITIES:
        raise ValueError(f"severity {row.severity!r} is not one of {SEVERITIES}")
    return row


def read_table(path: str | os.PathLike) -> list[Row]:
    """The rows of a table by write_table; a table of 3 columns (written before severities) holds errors."""
    lines = Path(path).read_text().splitlines()
    header = tuple(lines[0].split("\t")) if lines else ()
    if header not in (COLUMNS, COLUMNS[:3]):
        raise ValueError(f"{path} is not a validation table (header {lines[:1]})")
    if len(header) == 3:
        return [Row(*ln.split("\t", 2)) for ln in lines[1:] if ln.strip()]
    return [_row(ln.split("\t", 3)) for ln in lines[1:] if ln.strip()]


def format_table(rows: list[Row]) -> str:
    """Plain-text table, columns aligned: subject, file, severity, problem (last and never cut)."""
    if not rows:
        return ""
    cols = ("subject", "file", "severity", "problem")
    cells = [tuple(_clean(v) for v in (r.subject, r.file, r.severity, r.problem)) for r in map(_row, rows)]
    w = [max(len(r[i]) for r in [cols, *cells]) for i in range(3)]
    return "\n".join(f"{r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:<{w[2]}}  {r[3]}" for r in [cols, *cells])


def summary(rows: list[Row], n_subjects: int, voxels: bool = True) -> str:
    """One line: subjects with errors and the error count; warnings counted apart ("; 1 warning")."""
    what = "headers and voxels" if voxels else "headers only"
    rows = [_row(r) for r in rows]
    errs, warns = error_rows(rows), len(warning_rows(rows))
    tail = f"; {warns} warning{'s' if warns != 1 else ''}" if warns else ""
    if not errs:
        return f"voxflow validate: all {n_subjects} subjects OK ({what}){tail}"
    return (f"voxflow validate: {len({r.subject for r in errs})} of {n_subjects} subjects have problems ({len(errs)} "
            f"problem{'s' if len(errs) != 1 else ''}; {what}){tail}")


# --- workflow steps ----------------------------------------------------------------------------------------------

def validate(subject: str, inp: dict, out: dict, cfg: dict, threads: int = 1) -> dict:
    """The `validate` rule: one subject's table; it succeeds whatever it finds, and ingest fails
    with the table's first row, so a broken subject stops there while the table is complete."""
    import logging

    missing = cfg.get("missing") or {}
    images = {m: p for m, p in cfg["images"].items() if m not in missing}
    rows = check_subject(subject, images, cfg.get("label"), cfg["reference"], cfg.get("label_values"),
                         cfg.get("problem"), voxels=cfg.get("voxels", True))
    rows += [Row(subject, "-", f"modality '{m}' is missing ({why}): it will be synthesized (input.missing: "
                               "synthesize)", "warning") for m, why in missing.items()]
    for r in rows:
        logging.getLogger("voxflow").warning("%s: %s", "problem" if r.severity == "error" else "warning",
                                             subject_problem(r.subject, r.file, r.problem))
    write_table(rows, out["table"])
    return {"problems": len(error_rows(rows)), "warnings": len(warning_rows(rows))}


def tables_changed(tables: list[str], merged: str) -> bool:
    """Whether any per-subject table exists and is newer than the merged table (or that is missing)."""
    try:
        since = os.stat(merged).st_mtime_ns
    except FileNotFoundError:
        since = -1
    for t in tables:
        try:
            if os.stat(t).st_mtime_ns > since:
                return True
        except FileNotFoundError:
            continue
    return False


def merge_tables(tables: list[str], out_table: str, out_text: str, missing_ok: bool = False) -> str:
    """The cohort table (rule validation_table): per-subject tables concatenated in cohort order, as
    TSV and as text with a summary line; returns the text.

    missing_ok: tables of subjects whose job never ran (a run stopped early) are skipped and counted."""
    present = [t for t in tables if not missing_ok or os.path.exists(t)]
    rows = [r for t in present for r in read_table(t)]
    write_table(rows, out_table)
    text = format_table(rows)
    text = (text + "\n" if text else "") + summary(rows, len(present))
    if len(present) < len(tables):
        text += f"; {len(tables) - len(present)} subjects not checked (their jobs did not run)"
    with atomic_path(out_text) as tmp:
        Path(tmp).write_text(text + "\n")
    return text


def check_label_grid(label, reference, subject: str, path: str) -> None:
    """The label must lie on the reference grid (images or header `Grid`s). When the directions differ,
    the message shows them and names what differs (size, spacing and origin alone may look identical)."""
    if same_grid(label, reference):
        return
    a, b = f"label grid ({grid_summary(label)}", f"the reference image ({grid_summary(reference)}"
    if not np.allclose(label.GetDirection(), reference.GetDirection(), atol=1e-3):
        differ = [name for name, same in (
            ("sizes", tuple(label.GetSize()) == tuple(reference.GetSize())),
            ("spacings", np.allclose(label.GetSpacing(), reference.GetSpacing(), atol=1e-3)),
            ("origins", np.allclose(label.GetOrigin(), reference.GetOrigin(), atol=1e-2))) if not same]
        raise InputError(subject, path, f"{a}, direction {grid_direction(label)}) does not match {b}, direction "
                                        f"{grid_direction(reference)}): {' and '.join(differ + ['directions'])} differ")
    raise InputError(subject, path, f"{a}) does not match {b})")


def check_label_values(label: sitk.Image, subject: str, path: str, allowed: set[int] | None) -> None:
    """Integer values in 0..255 (stored as uint8), all in the declared set when there is one."""
    arr = sitk.GetArrayViewFromImage(label)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise InputError(subject, path, "label has non-integer values")
    values = set(int(v) for v in np.unique(arr))
    if min(values) < 0 or max(values) > 255:  # stored as uint8: anything else would wrap silently
        raise InputError(subject, path, f"label values {sorted(v for v in values if not 0 <= v <= 255)} "
                                        "outside 0..255")
    if allowed is not None and not values <= allowed:
        raise InputError(subject, path,
                         f"label values {sorted(values - allowed)} not in the declared set {sorted(allowed)}")


def grid_direction(grid) -> str:
    return "(" + ",".join(f"{round(v, 3) + 0.0:g}" for v in grid.GetDirection()) + ")"
