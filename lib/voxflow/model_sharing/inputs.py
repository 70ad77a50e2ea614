"""`voxflow predict`'s inputs: one subject's folder, a folder of subject folders, or `modality=file` pairs, matched
to the model's modalities by name (`t1.nii.gz`, `sub01_t1c.nii.gz`, BraTS `*_flair.nii.gz` / `*-t2f.nii.gz`,
nnU-Net `*_0000.nii.gz` in the model's modality order). A folder with two scans or none for a modality is that
subject's problem (SubjectError), a command line that cannot work is a UsageError."""

from __future__ import annotations

import os
import re
from pathlib import Path

from voxflow.errors import subject_problem

IMAGE_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".hdr")
# data files of two-file formats (their header file is the candidate) and other companions, never a scan
_COMPANION = re.compile(r".*\.(img|img\.gz|raw|zraw|json|bval|bvec|txt|csv|tsv)$", re.I)

class UsageError(Exception):
    """A problem with the command line or the model: one line, exit code 2, nothing runs."""


class SubjectError(Exception):
    def __init__(self, subject: str, file, problem: str, step: str):
        self.subject, self.file, self.problem, self.step = subject, str(file) if file else "-", problem, step
        super().__init__(subject_problem(subject, self.file, problem))


# --- matching scans to the model's modalities --------------------------------------------------------------

def image_stem(name: str) -> str | None:
    """The file name without its image extension; None for a file that is not a scan."""
    low = name.lower()
    for ext in IMAGE_EXTENSIONS:
        if low.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)]
    return None


def _ends_with(stem: str, token: str) -> bool:
    return re.search(r"(^|[_\-. ])" + re.escape(token.lower()) + r"$", stem.lower()) is not None


def _aliases(modality: str) -> list[str]:
    from voxflow.inputs.layouts import BRATS_NAMES

    return [a for a in BRATS_NAMES.get(modality.lower(), ()) if a != modality.lower()]


def _candidates(folder: Path) -> dict[str, Path]:
    """stem -> entry: the scans of a subject folder (image files, and folders that may hold a DICOM series)."""
    out = {}
    for e in sorted(os.scandir(folder), key=lambda e: e.name):
        if e.name.startswith("."):
            continue
        if e.is_dir():
            out[e.name] = Path(e.path)
        elif e.is_file() and not _COMPANION.match(e.name):
            stem = image_stem(e.name)
            if stem is not None:
                out.setdefault(stem, Path(e.path))
    return out


def match_modalities(folder: str | os.PathLike, modalities: list[str], subject: str | None = None) -> dict[str, str]:
    """modality -> file of one subject folder, matched by name (case ignored): the stem is the modality or ends
    with `_<modality>` / `-<modality>` / `.<modality>`; failing that, a BraTS alias (t1n, t1ce, t2w, t2f, ...);
    failing that, the nnU-Net channel suffix `_<index:04d>` in the model's modality order. Two candidates or
    none for a modality, or one file for two modalities: SubjectError naming the folder and the modality."""
    folder = Path(folder)
    subject = subject or folder.name
    cands = _candidates(folder)
    found: dict[str, str] = {}
    for i, m in enumerate(modalities):
        tiers = [[s for s in cands if _ends_with(s, m)],
                 [s for s in cands if any(_ends_with(s, a) for a in _aliases(m))],
                 [s for s in cands if s.endswith(f"_{i:04d}")]]
        hits = next((t for t in tiers if t), [])
        if not hits:
            have = ", ".join(cands[s].name for s in cands) or "nothing"
            raise SubjectError(subject, folder, f"no scan for modality '{m}' (a file named {m}.nii.gz or "
                                                f"*_{m}.nii.gz; the folder holds: {have}); or give the files: "
                                                f"-i {' '.join(f'{x}=FILE' for x in modalities)}", "inputs")
        if len(hits) > 1:
            raise SubjectError(subject, folder, f"{len(hits)} scans match modality '{m}': "
                                                f"{', '.join(cands[s].name for s in hits)}; keep one, or give the "
                                                f"files: -i {' '.join(f'{x}=FILE' for x in modalities)}", "inputs")
        found[m] = str(cands[hits[0]])
    taken: dict[str, str] = {}
    for m, f in found.items():
        if f in taken:
            raise SubjectError(subject, folder, f"{Path(f).name} matches both modality '{taken[f]}' and '{m}'; "
                                                f"give the files: -i {' '.join(f'{x}=FILE' for x in modalities)}",
                               "inputs")
        taken[f] = m
    return found


def _is_subject_folder(folder: Path, modalities: list[str]) -> bool:
    """A folder of scans (any image file in it), or of one DICOM series folder per modality."""
    cands = _candidates(folder)
    if any(p.is_file() for p in cands.values()):
        return True
    dirs = [s for s, p in cands.items() if p.is_dir()]
    return bool(dirs) and all(any(_ends_with(s, m) for s in dirs) for m in modalities)


def _files_subject(files: dict[str, str]) -> str:
    """The subject ID of modality=file inputs: the first file's name without extension and modality suffix
    (sub01 for sub01_t1.nii.gz), or its folder's name when the file is named after the modality (t1.nii.gz)."""
    m, first = next(iter(files.items()))
    p = Path(first)
    stem = image_stem(p.name) or p.name
    if stem.lower() == m.lower():
        return p.parent.name or stem
    hit = re.search(r"[_\-. ]" + re.escape(m) + r"$", stem, re.I)
    return stem[: hit.start()] if hit and hit.start() > 0 else stem


def resolve_inputs(inputs: list[str], modalities: list[str]) -> list[tuple[str, dict[str, str] | SubjectError]]:
    """(subject, modality -> file) per subject of the INPUT arguments, or (subject, SubjectError) for a subject
    whose scans cannot be matched. UsageError for arguments that name no subject at all."""
    explicit = [a for a in inputs if "=" in a and not os.path.exists(a)]
    if explicit:
        if len(explicit) != len(inputs):
            raise UsageError("-i takes either folders or modality=file pairs, not both")
        files: dict[str, str] = {}
        for a in explicit:
            m, _, path = a.partition("=")
            if not m or not path:
                raise UsageError(f"-i {a!r}: expected modality=file")
            if m in files:
                raise UsageError(f"-i gives modality '{m}' twice")
            files[m] = os.path.abspath(path)
        return [(_files_subject(files), files)]
    subjects: list[tuple[str, Path]] = []
    for a in inputs:
        p = Path(a)
        if p.is_file():
            raise UsageError(f"-i {a}: a file; give the subject's folder, or modality=file pairs "
                             f"({' '.join(f'{m}=FILE' for m in modalities)})")
        if not p.is_dir():
            raise UsageError(f"-i {a}: no such file or folder")
        p = Path(os.path.abspath(p))
        if _is_subject_folder(p, modalities):
            subjects.append((p.name, p))
            continue
        subs = sorted((Path(e.path) for e in os.scandir(p) if e.is_dir() and not e.name.startswith(".")),
                      key=lambda q: q.name)
        if not subs:
            raise UsageError(f"-i {a}: no scans and no subject folders in it")
        subjects += [(q.name, q) for q in subs]
    seen: dict[str, Path] = {}
    for s, p in subjects:
        if s in seen:
            raise UsageError(f"subject {s!r} is given twice ({seen[s]} and {p}): outputs are named by subject")
        seen[s] = p
    out: list[tuple[str, dict[str, str] | SubjectError]] = []
    for s, p in subjects:
        try:
            out.append((s, match_modalities(p, modalities, s)))
        except SubjectError as exc:
            out.append((s, exc))
    return out


# --- the commands ------------------------------------------------------------------------------------------
