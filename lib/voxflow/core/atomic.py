"""The one way voxflow writes a file or folder: under a temporary sibling name, moved into place only once it is
complete, so that a killed job never leaves a half-written file that looks complete (Snakemake, a resumed run
and a reader all trust what exists under the final name)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; move it into place only if the block succeeds.

    The temporary name keeps the suffix (``.nii.gz``, ``.zarr``) so that writers that
    dispatch on the extension still work. Works for files and directories.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    name = path.name
    stem, dot, ext = name.partition(".")
    tmp = path.with_name(f".{stem}.tmp-{os.getpid()}{dot}{ext}")
    remove_path(tmp)
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        remove_path(tmp)
        raise


def remove_path(p: str | os.PathLike) -> None:
    """Remove a file, a link or a whole folder; nothing when it is absent."""
    p = Path(p)
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists() or p.is_symlink():
        p.unlink()


def write_text_atomic(text: str, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(obj: Any, path: str | os.PathLike, *, indent: int = 2, sort_keys: bool = True,
                      default: Any = None, newline: bool = False) -> None:
    """JSON written atomically; the format options are json.dumps' (the files' formats predate this function and
    are kept byte for byte)."""
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, default=default)
    write_text_atomic(text + ("\n" if newline else ""), path)
