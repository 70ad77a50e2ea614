"""A trained model as one file: `voxflow export-model` packs a model folder into a zip with a manifest,
`open_model` unpacks and checks it for `voxflow predict`.

The archive holds exactly what prediction needs: plans.json, settings.json (the input, preprocess and
infer settings of the training run: the preprocessing chain is rebuilt from them), postprocessing.json,
every fold_<k>/model_final.pt, and fingerprint.json / normalization.json where the folder has them. A model of
several configurations (model.configurations) holds inference.json instead of postprocessing.json (the chosen
configurations, their post-processing) and only the chosen models, `<configuration>/fold_<k>/model_final.pt`
with each configuration's plans.json (and a chosen cascade's `3d_cascade/lowres/` folds, which it chains);
`manifest.json` lists each file's sha256 and size, the voxflow version, the modalities, the label values
and the creation time. Opening an archive checks every file against the manifest (no file missing, none
unlisted, every checksum equal) before anything is used; a problem is one `ModelArchiveError` line that
names the archive and the file. Standard library, voxflow.settings and voxflow.planning.plans (plans.json read as
Plans) only: opening a model costs no heavy import.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from voxflow.settings.model import DATASET_NORMALIZATIONS
from voxflow.core.atomic import atomic_path
from voxflow.errors import first_line
from voxflow.core.layout import (ANY_FOLD_MODEL, FINGERPRINT_FILE, INFERENCE_FILE, LOWRES_DIR, MODEL_FILE,
                                 NORMALIZATION_FILE, PLANS_FILE, POSTPROCESSING_FILE, SETTINGS_FILE, fold_models)
from voxflow.planning.plans import Plans

MANIFEST = "manifest.json"
FORMAT = "voxflow-model"
FORMAT_VERSION = 1
REQUIRED = (PLANS_FILE, SETTINGS_FILE, POSTPROCESSING_FILE)
INFERENCE = INFERENCE_FILE  # a model of several configurations: in place of postprocessing.json
OPTIONAL = (FINGERPRINT_FILE, NORMALIZATION_FILE)
_CONFIGURATION = r"(?:2d|2\.5d|3d|3d_cascade)(?:/lowres)?"  # model.configurations' folders
FOLD_MODEL = re.compile(rf"(?:{_CONFIGURATION}/)?fold_(\d+)/{re.escape(MODEL_FILE)}")
CONFIGURATION_PLANS = re.compile(rf"{_CONFIGURATION}/{re.escape(PLANS_FILE)}")


def required_files(several: bool) -> list[str]:
    """The JSON files a model must hold: a model of several configurations has inference.json (the choice and its
    post-processing) in place of postprocessing.json. The one rule of export, opening and the manifest check."""
    return [INFERENCE if several and n == POSTPROCESSING_FILE else n for n in REQUIRED]
# the first voxflow whose workflow writes model/settings.json (the model_settings rule)
SETTINGS_SINCE = "0.1.0"
_CHUNK = 1 << 20


class ModelArchiveError(Exception):
    """A model archive or folder that cannot be used, as one line: `<source>: <problem>`."""

    def __init__(self, source: str | os.PathLike, problem: str):
        self.source, self.problem = str(source), problem
        super().__init__(f"{self.source}: {problem}")


def voxflow_version() -> str:
    try:
        from voxflow import __version__

        return __version__
    except ImportError:  # pragma: no cover - a stripped package
        from importlib.metadata import version

        return version("voxflow")


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_json(d: Path, name: str, source) -> dict:
    """The JSON object d/name; a one-line ModelArchiveError naming `source` and the file when it is none."""
    try:
        data = json.loads((d / name).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelArchiveError(source, f"cannot read {name}: {exc}") from None
    if not isinstance(data, dict):
        raise ModelArchiveError(source, f"{name} is not a JSON object")
    return data


def _fold_key(name: str) -> int:
    m = FOLD_MODEL.fullmatch(name)
    assert m is not None, name
    return int(m.group(1))


def normalization_needed(settings: dict) -> list[str]:
    """The dataset-level normalization methods of the settings (they need the model's normalization.json), as
    the chain resolves them (voxflow.settings.ChainSettings.norm_methods)."""
    from voxflow.settings import ChainSettings

    try:
        methods = ChainSettings.from_json(settings).norm_methods.values()
    except (KeyError, TypeError):  # incomplete settings: _check_settings names what is missing
        return []
    return sorted(set(methods) & DATASET_NORMALIZATIONS)


def _read_plans(d: Path, source) -> Plans:
    """d/plans.json as Plans (a one-line ModelArchiveError when it cannot be read)."""
    return Plans.from_dict(_read_json(d, PLANS_FILE, source), source=str(d / PLANS_FILE))


def _check_settings(settings: dict, plans: Plans, source) -> None:
    missing = [k for k in ("input", "preprocess", "infer") if not isinstance(settings.get(k), dict)]
    if missing:
        raise ModelArchiveError(source, f"settings.json lacks the section(s) {', '.join(missing)}: rerun the "
                                        "workflow's model_settings rule")
    mods = settings["input"].get("modalities")
    if not mods or not isinstance(mods, list):
        raise ModelArchiveError(source, "settings.json names no input.modalities")
    trained_on = plans.optional("modalities")
    if trained_on and trained_on != list(mods):
        raise ModelArchiveError(source, f"settings.json gives modalities {mods}, plans.json {trained_on}: "
                                        "not the settings of this model")


def _chosen_models(d: Path, source) -> list[str]:
    """A model of several configurations: the chosen models inference.json names (relative, '/'-separated),
    each configuration's plans.json, and the low-resolution folds a chosen cascade chains."""
    doc = _read_json(d, INFERENCE, source)
    models = doc.get("models")
    if not isinstance(models, list) or not models or not all(isinstance(m, str) and FOLD_MODEL.fullmatch(m)
                                                             for m in models):
        raise ModelArchiveError(source, f"{INFERENCE} names no models of the form <configuration>/{ANY_FOLD_MODEL} "
                                        f"(models: {models!r})")
    names = list(dict.fromkeys(models))
    for conf in dict.fromkeys(m.rsplit("/", 2)[0] for m in models):
        low = d / conf / LOWRES_DIR
        names += sorted(f"{conf}/{LOWRES_DIR}/{p.parent.name}/{MODEL_FILE}" for p in fold_models(low))
    for conf in dict.fromkeys(n.rsplit("/", 2)[0] for n in list(names)):
        names.append(f"{conf}/{PLANS_FILE}")
    return names


def model_files(model_dir: str | os.PathLike) -> dict[str, Path]:
    """Archive name -> file of a model folder: what `export_model` packs. Raises a one-line
    ModelArchiveError naming what is missing."""
    d = Path(model_dir)
    if not d.is_dir():
        raise ModelArchiveError(model_dir, "not a directory (a trained model folder, e.g. results/model)")
    files: dict[str, Path] = {}
    if not (d / SETTINGS_FILE).is_file():
        raise ModelArchiveError(model_dir, f"no {SETTINGS_FILE}: was this model trained with voxflow >= "
                                           f"{SETTINGS_SINCE}? rerun the workflow's model_settings rule "
                                           "(snakemake --configfile <the run's config> "
                                           "<output_dir>/model/settings.json)")
    several = (d / INFERENCE).is_file()
    required = required_files(several)
    missing = [n for n in required if not (d / n).is_file()]
    if several:
        members = _chosen_models(d, model_dir)
        missing += [n for n in members if not (d / n).is_file()]
    else:
        members = [f"{p.parent.name}/{MODEL_FILE}" for p in fold_models(d)]
        if not members:
            missing.append(ANY_FOLD_MODEL)
    if missing:
        raise ModelArchiveError(model_dir, f"lacks {', '.join(missing)}: not the model folder of a finished "
                                           "training run (<output_dir>/model)")
    for n in [*required, *OPTIONAL]:
        if (d / n).is_file():
            files[n] = d / n
    for n in members:
        files[n] = d / n
    settings = _read_json(d, SETTINGS_FILE, model_dir)
    plans = _read_plans(d, model_dir)
    _check_settings(settings, plans, model_dir)
    needed = normalization_needed(settings)
    if needed and NORMALIZATION_FILE not in files:
        raise ModelArchiveError(model_dir, f"lacks {NORMALIZATION_FILE} (normalization {needed}): rerun the "
                                           "workflow's normalization_stats rule")
    return files


def export_model(model_dir: str | os.PathLike, archive: str | os.PathLike) -> dict:
    """Pack a model folder into `archive` (a zip, written under a temporary name and renamed); returns
    the manifest."""
    files = model_files(model_dir)
    d = Path(model_dir)
    settings = _read_json(d, SETTINGS_FILE, model_dir)
    plans = _read_plans(d, model_dir)
    inp = settings["input"]
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "voxflow_version": voxflow_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "modalities": list(inp["modalities"]), "reference": inp.get("reference"),
        "modality_types": inp.get("modality_types") or {},
        "label_values": list(inp.get("label_values") or plans.optional("label_values") or []),
        "space": (settings.get("preprocess") or {}).get("space", "mni"),
        "folds": sorted({_fold_key(n) for n in files if FOLD_MODEL.fullmatch(n)}),
        "configurations": (_read_json(d, INFERENCE, model_dir).get("configurations")
                           if INFERENCE in files else None),
        "files": {n: {"sha256": sha256_file(p), "size": p.stat().st_size} for n, p in files.items()},
    }
    out = Path(archive)
    if out.is_dir():
        raise ModelArchiveError(archive, "is a directory; give the archive's file name (e.g. model.zip)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            zf.writestr(MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
            for name, path in files.items():
                zf.write(path, name)
        os.chmod(tmp, 0o644)
    # the files may have changed while they were packed (a fold still training): the archive must be what
    # the manifest says
    for name, path in files.items():
        if path.stat().st_size != manifest["files"][name]["size"]:
            out.unlink(missing_ok=True)
            raise ModelArchiveError(model_dir, f"{name} changed while it was packed (still training?)")
    return manifest


@dataclass
class Model:
    """A usable model: its folder (an opened archive's extraction, or a model folder) and its settings."""

    dir: Path
    source: str                      # what the user gave: the archive or the folder
    settings: dict
    plans: Plans
    postprocessing: dict
    model_paths: list[str]           # fold_<k>/model_final.pt, by fold number (the workflow's order)
    normalization: str | None        # normalization.json, where the model has one
    manifest: dict | None = None
    sha256: str | None = None        # of the archive (None: a plain folder)
    extra: dict = field(default_factory=dict)

    @property
    def modalities(self) -> list[str]:
        return list(self.settings["input"]["modalities"])

    @property
    def label_values(self) -> list[int]:
        return list(self.settings["input"].get("label_values") or self.plans.optional("label_values") or [])

    @property
    def space(self) -> str:
        return self.settings["preprocess"].get("space", "mni")

    def check_modalities(self, given) -> None:
        """Refuse inputs whose modalities are not the model's (order does not matter: they are named)."""
        given = list(given)
        if sorted(given) != sorted(self.modalities):
            missing = [m for m in self.modalities if m not in given]
            extra = [m for m in given if m not in self.modalities]
            what = "; ".join(x for x in (f"missing {missing}" if missing else "",
                                         f"not the model's {extra}" if extra else "") if x)
            raise ModelArchiveError(self.source, f"the model takes modalities {self.modalities}, the inputs give "
                                                 f"{given} ({what})")


def load_model_dir(d: str | os.PathLike, source: str | os.PathLike | None = None, manifest: dict | None = None,
                   sha256: str | None = None) -> Model:
    source = str(source if source is not None else d)
    d = Path(d)
    try:
        model_files(d)
    except ModelArchiveError as exc:
        raise ModelArchiveError(source, exc.problem) from None
    settings = _read_json(d, SETTINGS_FILE, source)
    plans = _read_plans(d, source)
    inference = _read_json(d, INFERENCE, source) if (d / INFERENCE).is_file() else None
    post = (inference.get("postprocessing") or {} if inference is not None
            else _read_json(d, POSTPROCESSING_FILE, source))
    if manifest is None and (d / MANIFEST).is_file():  # an unpacked archive: still checked
        manifest = _read_json(d, MANIFEST, source)
        _check_manifest(manifest, source)
        _verify_folder(d, manifest, source)
    if (manifest is not None and manifest.get("modalities")
            and list(manifest["modalities"]) != list(settings["input"]["modalities"])):
        raise ModelArchiveError(source, f"manifest.json gives modalities {manifest['modalities']}, settings.json "
                                        f"{settings['input']['modalities']}")
    if inference is not None:  # the chosen models, in inference.json's order (the workflow's)
        paths = [str(d / m) for m in inference["models"]]
    else:
        paths = [str(p) for p in fold_models(d)]
    norm = d / NORMALIZATION_FILE
    return Model(dir=d, source=source, settings=settings, plans=plans, postprocessing=post,
                 model_paths=paths, normalization=str(norm) if norm.is_file() else None,
                 manifest=manifest, sha256=sha256)


def _check_manifest(manifest, source) -> None:
    if (not isinstance(manifest, dict) or manifest.get("format") != FORMAT
            or not isinstance(manifest.get("files"), dict)):
        raise ModelArchiveError(source, f"{MANIFEST} is not a voxflow model manifest")
    if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelArchiveError(source, f"archive format {manifest['format_version']} is newer than this voxflow "
                                        f"({voxflow_version()}) reads ({FORMAT_VERSION}): update voxflow")
    for name, entry in manifest["files"].items():
        if not _safe_name(name) or name == MANIFEST:
            raise ModelArchiveError(source, f"{MANIFEST} lists a file name that cannot be unpacked: {name!r}")
        if (not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str)
                or not isinstance(entry.get("size"), int)):
            raise ModelArchiveError(source, f"{MANIFEST} has no sha256/size for {name}")
    names = set(manifest["files"])
    missing = [n for n in required_files(INFERENCE in names) if n not in names]
    if not any(FOLD_MODEL.fullmatch(n) for n in names):
        missing.append(ANY_FOLD_MODEL)
    if missing:
        raise ModelArchiveError(source, f"{MANIFEST} lists no {', '.join(missing)}: not a complete model")


def _safe_name(name: str) -> bool:
    """Only the names export_model writes: relative, '/'-separated, no '..', no drive, no backslash."""
    return (name in REQUIRED or name in OPTIONAL or name in (MANIFEST, INFERENCE) or bool(FOLD_MODEL.fullmatch(name))
            or bool(CONFIGURATION_PLANS.fullmatch(name)))


def _verify_folder(d: Path, manifest: dict, source) -> None:
    """An unpacked model folder against its manifest: the same files, sizes and checksums."""
    present = {str(p.relative_to(d)).replace(os.sep, "/") for p in d.rglob("*") if p.is_file()} - {MANIFEST}
    listed = set(manifest["files"])
    for name in sorted(present - listed):
        raise ModelArchiveError(source, f"unlisted file {name} (not in {MANIFEST})")
    for name in sorted(listed - present):
        raise ModelArchiveError(source, f"{name} is listed in {MANIFEST} but missing")
    for name in sorted(listed):
        entry = manifest["files"][name]
        p = d / name
        if p.stat().st_size != entry["size"]:
            raise ModelArchiveError(source, f"size mismatch for {name} ({p.stat().st_size} bytes, {MANIFEST} says "
                                            f"{entry['size']})")
        got = sha256_file(p)
        if got != entry["sha256"]:
            raise ModelArchiveError(source, f"checksum mismatch for {name} (sha256 {got[:16]}..., {MANIFEST} says "
                                            f"{entry['sha256'][:16]}...)")


def _zip_problem(exc: Exception) -> str:
    return first_line(exc, 200) or type(exc).__name__


def _unpack(zf: zipfile.ZipFile, manifest: dict, dest: Path, source) -> None:
    """Extract every listed file into `dest`, hashing while writing; any mismatch raises."""
    infos = {i.filename: i for i in zf.infolist()}
    for name in sorted(manifest["files"]):
        entry, info = manifest["files"][name], infos[name]
        if info.file_size != entry["size"]:
            raise ModelArchiveError(source, f"size mismatch for {name} ({info.file_size} bytes in the archive, "
                                            f"{MANIFEST} says {entry['size']})")
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        h, n = hashlib.sha256(), 0
        try:
            with zf.open(info) as src, open(target, "wb") as out:
                for chunk in iter(lambda: src.read(_CHUNK), b""):
                    n += len(chunk)
                    if n > entry["size"]:
                        raise ModelArchiveError(source, f"{name} is larger than {MANIFEST} says "
                                                        f"({entry['size']} bytes)")
                    h.update(chunk)
                    out.write(chunk)
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise ModelArchiveError(source, f"{name} is corrupt in the archive ({_zip_problem(exc)})") from None
        got = h.hexdigest()
        if got != entry["sha256"]:
            raise ModelArchiveError(source, f"checksum mismatch for {name} (sha256 {got[:16]}..., {MANIFEST} says "
                                            f"{entry['sha256'][:16]}...)")


def read_manifest(zf: zipfile.ZipFile, source) -> dict:
    names = zf.namelist()
    if MANIFEST not in names:
        raise ModelArchiveError(source, f"no {MANIFEST}: not a model archive written by `voxflow export-model`")
    if len(names) != len(set(names)):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ModelArchiveError(source, f"the archive holds {dup[0]} more than once")
    try:
        manifest = json.loads(zf.read(MANIFEST).decode("utf-8"))
    except (ValueError, UnicodeDecodeError, zipfile.BadZipFile, zlib.error) as exc:
        raise ModelArchiveError(source, f"cannot read {MANIFEST}: {_zip_problem(exc)}") from None
    _check_manifest(manifest, source)
    listed = set(manifest["files"])
    members = {n for n in names if not n.endswith("/")} - {MANIFEST}
    for name in sorted(members - listed):
        raise ModelArchiveError(source, f"unlisted file {name} in the archive (not in {MANIFEST})")
    for name in sorted(listed - members):
        raise ModelArchiveError(source, f"{name} is listed in {MANIFEST} but missing from the archive")
    return manifest


def open_model(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
               work_dir: str | os.PathLike | None = None) -> Model:
    """A model from an archive (`voxflow export-model`) or a model folder (results/model).

    An archive is checked and unpacked into `cache_dir/<sha256 of the archive>` (reused by later calls,
    checked again each time), or, without a cache, into a new temporary folder under `work_dir` (default
    the system's temporary folder; the caller removes it: `Model.dir`)."""
    p = Path(path)
    if p.is_dir():
        return load_model_dir(p, source=path)
    if not p.is_file():
        raise ModelArchiveError(path, "no such file or folder")
    digest = sha256_file(p)
    try:
        zf = zipfile.ZipFile(p)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelArchiveError(path, f"not a zip archive ({_zip_problem(exc)})") from None
    with zf:
        manifest = read_manifest(zf, path)
        if cache_dir is not None:
            final = Path(cache_dir) / digest
            if final.is_dir():
                try:
                    return load_model_dir(final, source=path, sha256=digest)  # checked against its manifest
                except ModelArchiveError:
                    shutil.rmtree(final, ignore_errors=True)  # a damaged cache entry: unpack again
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}.tmp-", dir=final.parent))
        else:
            if work_dir is not None:
                Path(work_dir).mkdir(parents=True, exist_ok=True)
            final = tmp = Path(tempfile.mkdtemp(prefix=f".model-{digest[:12]}-", dir=work_dir))
        try:
            _unpack(zf, manifest, tmp, path)
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            model = load_model_dir(tmp, source=path, manifest=manifest, sha256=digest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    if tmp != final:
        try:
            os.replace(tmp, final)
        except OSError:  # another process unpacked the same archive first: use its copy
            shutil.rmtree(tmp, ignore_errors=True)
            return load_model_dir(final, source=path, sha256=digest)
        model = load_model_dir(final, source=path, manifest=manifest, sha256=digest)
    return model
