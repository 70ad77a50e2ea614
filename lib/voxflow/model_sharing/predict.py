"""`voxflow predict` (a trained model on new scans, one command) and `voxflow export-model` (a model folder
as one archive).

    voxflow export-model results/model model.zip
    voxflow predict -i scans/sub01 -m model.zip -o out/

An INPUT is one subject's folder (its scans matched to the model's modalities by name: `t1.nii.gz`,
`sub01_t1c.nii.gz`, BraTS `*_flair.nii.gz` / `*-t2f.nii.gz`, nnU-Net `*_0000.nii.gz` in the model's
modality order), a folder of subject folders, or explicit files `t1=a.nii.gz t2=b.nii.gz`. Each subject
runs the workflow's own preprocessing chain (`voxflow.preprocess.steps.preprocess_subject`, with the settings the
model was trained with), then the workflow's inference (`voxflow.inference.predict.predict_subject`): the same
code, so the same prediction. Exit codes: 0 every subject predicted, 1 some subject failed (one line
each; the others ran), 2 a usage or model problem (one line, nothing ran).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from pathlib import Path

from voxflow.model_sharing.archive import ModelArchiveError
from voxflow.model_sharing.inputs import SubjectError, UsageError, resolve_inputs
from voxflow.core.atomic import write_json_atomic
from voxflow.core.layout import prediction_name, prediction_sidecar_name, probability_name
from voxflow.errors import error_line

WORK = ".work"


def _error(msg: str) -> None:
    print(f"voxflow ERROR: {msg}", file=sys.stderr, flush=True)


def _write_json(obj: dict, path: Path) -> None:
    write_json_atomic(obj, path, sort_keys=False, default=str, newline=True)


def _set_threads(threads: int) -> None:
    """Thread limits for ITK (SimpleITK and ANTs' own copy), OpenMP, MKL and torch, before the work starts.
    The workflow's jobs run with their rule's threads (1 by default); with the same count, the results are
    the workflow's to the voxel."""
    for var in ("OMP_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    try:
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    except ImportError:  # pragma: no cover
        pass
    import torch

    torch.set_num_threads(threads)


def _open(args, work_root: Path):
    from voxflow.model_sharing.archive import open_model

    return open_model(args.model, cache_dir=args.cache_dir, work_dir=work_root)


def _store_grid_name(subject: str, space: str) -> str:
    return prediction_name(subject, "mni" if space == "mni" else "resampled")


def _predict_one(model, subject: str, images: dict[str, str], out_dir: Path, work: Path, device, threads: int,
                 bar) -> dict:
    """One subject: the workflow's chain, then its inference; the outputs land in out_dir/<subject>/."""
    from voxflow.preprocess.steps import preprocess_subject
    from voxflow.errors import InputError, failed_step, one_line
    from voxflow.inference.predict import predict_subject

    state = {"step": "preprocess"}

    def progress(step: str) -> None:
        state["step"] = step
        bar.set_postfix_str(f"{subject}: {step}", refresh=True)

    t0 = time.perf_counter()
    try:
        store = preprocess_subject(model.settings, subject, images, work, normalization=model.normalization,
                                   threads=threads, progress=progress)
    except InputError as exc:
        raise SubjectError(exc.subject, exc.file, exc.problem, exc.step or state["step"]) from exc
    except Exception as exc:  # noqa: BLE001 - re-raised as the subject's one line, from the step's own exception
        step, cause = failed_step(exc, state["step"])
        raise SubjectError(subject, getattr(cause, "file", None), one_line(cause), step) from cause
    t1 = time.perf_counter()
    progress("inference")
    stage = work / "prediction"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    names = {"native": prediction_name(subject), "grid": _store_grid_name(subject, model.space)}
    if model.settings["infer"].get("probabilities"):
        names["prob"] = probability_name(subject)
    infer_cfg = dict(model.settings["infer"], device=device.type)
    try:
        # positional: the store-grid output's parameter name is the workflow's business
        info = predict_subject(str(store), model.model_paths, model.postprocessing or None, infer_cfg,
                               str(stage / names["grid"]), str(stage / names["native"]),
                               str(stage / names["prob"]) if "prob" in names else None)
    except Exception as exc:
        raise SubjectError(subject, store, one_line(exc), "predict") from exc
    t2 = time.perf_counter()
    dest = out_dir / subject
    dest.mkdir(parents=True, exist_ok=True)
    for name in names.values():
        os.replace(stage / name, dest / name)
    from voxflow.model_sharing.archive import voxflow_version

    sidecar = {
        "subject": subject,
        "outputs": {k: os.path.abspath(dest / v) for k, v in names.items()},
        "model": {"source": os.path.abspath(model.source), "sha256": model.sha256,
                  "voxflow_version": (model.manifest or {}).get("voxflow_version"),
                  "folds": [Path(p).parent.name for p in model.model_paths]},
        "voxflow_version": voxflow_version(),
        "modalities": model.modalities,
        "inputs": {m: os.path.abspath(images[m]) for m in model.modalities},
        "space": model.space,
        "device": str(device), "threads": threads,
        "seconds": {"preprocess": round(t1 - t0, 2), "inference": round(t2 - t1, 2), "total": round(t2 - t0, 2)},
        "label_voxels_native": info.get("native_voxels") if isinstance(info, dict) else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    _write_json(sidecar, dest / prediction_sidecar_name(subject))
    return sidecar


def run_predict(args) -> int:
    from voxflow.inputs.cohort import SUBJECT_ID_RULE, subject_id_ok

    if not args.verbose:  # the steps' INFO lines would bury the progress bar
        logging.getLogger().setLevel(logging.WARNING)
    if args.threads < 1:
        _error(f"--threads {args.threads}: give 1 or more")
        return 2
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        _error(f"-o {args.output}: exists and is not a folder")
        return 2
    work_root = out_dir / WORK
    try:
        work_root.mkdir(parents=True, exist_ok=True)
        model = _open(args, work_root)
    except ModelArchiveError as exc:
        _error(str(exc))
        _cleanup(work_root, args.keep_work, None)
        return 2
    except OSError as exc:
        _error(f"-o {args.output}: {exc.strerror or exc}")
        return 2
    extracted = model.dir if args.cache_dir is None and model.sha256 else None
    try:
        return _run_subjects(args, model, out_dir, work_root, SUBJECT_ID_RULE, subject_id_ok)
    except (UsageError, ModelArchiveError) as exc:
        _error(str(exc))
        return 2
    finally:
        _cleanup(work_root, args.keep_work, extracted)


def _cleanup(work_root: Path, keep: bool, extracted: Path | None) -> None:
    if keep:
        return
    if extracted is not None:
        shutil.rmtree(extracted, ignore_errors=True)
    try:
        work_root.rmdir()  # only when empty: a subject's kept work stays
    except OSError:
        pass


def _run_subjects(args, model, out_dir: Path, work_root: Path, id_rule: str, id_ok) -> int:
    from tqdm.auto import tqdm

    subjects = resolve_inputs(args.input, model.modalities)
    if len(subjects) == 1 and isinstance(subjects[0][1], dict):
        model.check_modalities(list(subjects[0][1]))
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is visible (use --device cpu, or auto)")
    from voxflow.nn.checkpoints import pick_device

    device = pick_device(args.device)
    _set_threads(args.threads)
    failed, done = [], []
    t_start = time.perf_counter()
    with tqdm(total=len(subjects), unit="subject", desc="voxflow predict", file=sys.stderr,
              dynamic_ncols=True) as bar:
        for subject, images in subjects:
            bar.set_postfix_str(subject, refresh=True)
            work = work_root / subject
            try:
                if isinstance(images, SubjectError):
                    raise images
                if not id_ok(subject):
                    raise SubjectError(subject, None, f"{subject!r} cannot be a subject ID (the folder's or first "
                                                      f"file's name; allowed: {id_rule})", "inputs")
                shutil.rmtree(work, ignore_errors=True)
                sidecar = _predict_one(model, subject, images, out_dir, work, device, args.threads, bar)
                done.append((subject, sidecar))
            except SubjectError as exc:
                failed.append(exc)
                bar.write(error_line(exc.step, str(exc)), file=sys.stderr)
                if args.verbose and exc.__cause__ is not None:
                    logging.getLogger("voxflow").error("subject %s failed", subject, exc_info=exc.__cause__)
            finally:
                if not args.keep_work:
                    shutil.rmtree(work, ignore_errors=True)
            bar.update(1)
    for subject, sc in done:
        print(f"{subject}: {sc['outputs']['native']} ({sc['seconds']['total']:.1f} s)")
    total = time.perf_counter() - t_start
    print(f"voxflow predict: {len(done)} of {len(subjects)} subjects predicted in {total:.0f} s on {device}"
          + (f"; {len(failed)} failed: {', '.join(e.subject for e in failed)}" if failed else "")
          + (f"; work files kept in {work_root}" if args.keep_work else ""))
    return 1 if failed else 0


def run_export(args) -> int:
    from voxflow.model_sharing.archive import export_model

    try:
        manifest = export_model(args.model_dir, args.archive)
    except ModelArchiveError as exc:
        _error(str(exc))
        return 2
    except OSError as exc:
        _error(f"{args.archive}: {exc.strerror or exc}")
        return 2
    from voxflow.model_sharing.archive import sha256_file

    size = os.path.getsize(args.archive)
    print(f"wrote {args.archive}: folds {manifest['folds']}, modalities {manifest['modalities']}, "
          f"labels {manifest['label_values']}, {len(manifest['files'])} files, {size / 1e6:.1f} MB, "
          f"sha256 {sha256_file(args.archive)}")
    return 0


def add_parsers(sub) -> None:
    """Register `predict` and `export-model` on the `voxflow` command's subparsers."""
    p = sub.add_parser(
        "predict", help="predict new scans with a trained model (archive or model folder)",
        description="Preprocess each subject with the model's own settings (the workflow's chain), predict, "
                    "postprocess and map the prediction back to the subject's native space. Writes "
                    "OUT/<subject>/<subject>_seg.nii.gz (raw reference grid), <subject>_seg_mni.nii.gz or "
                    "_seg_resampled.nii.gz (the model's grid) and <subject>_seg.json. Exit code 0: all "
                    "predicted; 1: some subject failed (the others ran); 2: usage or model problem.")
    p.add_argument("-i", "--input", nargs="+", required=True, metavar="INPUT",
                   help="a subject folder (scans named by modality: t1.nii.gz, sub01_t1.nii.gz, BraTS "
                        "*_flair.nii.gz, nnU-Net *_0000.nii.gz), a folder of subject folders, or the files "
                        "of one subject as modality=file pairs (t1=a.nii.gz t2=b.nii.gz)")
    p.add_argument("-m", "--model", required=True, help="model.zip (voxflow export-model) or a model folder "
                                                        "(results/model)")
    p.add_argument("-o", "--output", required=True, help="output folder (one subfolder per subject)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="inference device (default auto: CUDA when visible)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for preprocessing and inference (default 1, as the workflow's jobs: the "
                        "same thread count gives the workflow's results to the voxel)")
    p.add_argument("--keep-work", action="store_true", help="keep the intermediate files in OUT/.work/<subject>/")
    p.add_argument("--cache-dir", default=None, help="unpack archives into CACHE_DIR/<sha256> and reuse them "
                                                     "(default: a temporary folder under OUT/.work)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every step; tracebacks of failures")
    p.set_defaults(func=run_predict)
    e = sub.add_parser("export-model", help="pack a trained model folder into one archive",
                       description="Pack plans.json, settings.json, postprocessing.json, fold_<k>/model_final.pt "
                                   "(and fingerprint.json, normalization.json) with a manifest of their sha256 "
                                   "into one zip, for `voxflow predict -m`. A model of several configurations: "
                                   "inference.json and the models it chose.")
    e.add_argument("model_dir", help="the model folder of a training run (<output_dir>/model)")
    e.add_argument("archive", help="the archive to write (e.g. model.zip)")
    e.set_defaults(func=run_export)


def main(argv: list[str] | None = None) -> int:
    """`voxflow predict ...` / `voxflow export-model ...` without the rest of the command line."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    p = argparse.ArgumentParser(prog="voxflow")
    add_parsers(p.add_subparsers(dest="cmd", required=True))
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
