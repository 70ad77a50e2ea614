"""Per-subject steps as called by the Snakemake rules (`voxflow step NAME`, table: voxflow.pipeline.registry) and by
the chain (voxflow.pipeline.chain), which lists their files and config.

Each step takes the subject ID, a mapping of named inputs and outputs (exactly the rule's) and
the config section it depends on. Files named by modality use the key ``img_<modality>``.
I/O and QC live here; the array and registration work lives in `voxflow.preprocess`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
import numpy as np

from voxflow.inputs.images import InputError
from voxflow.core.atomic import write_json_atomic
from voxflow.pipeline.status import subject_lists
from voxflow.pipeline.chain import RawSubject, build_chain, run_chain, step_spec
from voxflow.core.layout import fill, store_pattern, template_paths
from collections.abc import Callable, Mapping
import os
from voxflow.settings.model import ChainSettings, is_ct_modality

def by_modality(files: dict, prefix: str = "img_") -> dict[str, str]:
    return {k[len(prefix):]: v for k, v in files.items() if k.startswith(prefix)}


def ingest(subject: str, inp: dict, out: dict, cfg: dict, threads: int = 1) -> dict:
    from voxflow.preprocess.ingest import ingest_subject
    from voxflow.inputs.validate import read_table

    rows = [r for r in (read_table(inp["validation"]) if inp.get("validation") else []) if r.severity == "error"]
    if rows:  # the validate rule found errors (warnings don't stop ingest): the first is this job's one-line error
        more = f" (+{len(rows) - 1} more in {inp['validation']})" if len(rows) > 1 else ""
        raise InputError(rows[0][0], rows[0][1], rows[0][2] + more)
    if cfg.get("problem"):  # (file, problem) the input layout found at parse time: e.g. an empty sheet cell
        raise InputError(subject, *cfg["problem"])
    expected = cfg["expected"]  # modality -> path, also for files absent on disk
    images = {m: expected["images"].get(m) for m in cfg["modalities"]}
    values = set(cfg["label_values"]) if cfg.get("label_values") else None
    info = ingest_subject(subject, images, by_modality(out), cfg["reference"],
                          label=expected.get("label"), out_label=out.get("label"), label_values=values,
                          modality_types=cfg.get("modality_types"), missing=cfg.get("missing"))
    write_json_atomic(info, out["info"])
    return info


def coreg(subject: str, inp: dict, out: dict, cfg: dict, threads: int = 1) -> dict:
    from voxflow.preprocess.coreg import coregister_subject
    from voxflow.qc.subject import write_step_scores

    xfms = {m: out[f"xfm_{m}"] for m in cfg["modalities"] if f"xfm_{m}" in out}
    scores: dict = {}
    info = coregister_subject(subject, by_modality(inp), cfg["reference"], by_modality(out), xfms, scores=scores)
    qc_seconds = write_step_scores(out["scores"], scores.get("by_modality", {}), scores.get("seconds", 0.0))
    # keep a marker of which modality is the reference, for later inverse mapping
    write_json_atomic({"reference": cfg["reference"], "transforms": info}, out["info"])
    return {**info, "qc_seconds": qc_seconds}


def n4(subject: str, inp: dict, out: dict, cfg: dict, threads: int = 1) -> dict:
    from voxflow.preprocess.n4 import correct_subject
    from voxflow.qc.figures import n4_qc
    from voxflow.qc.subject import write_step_scores

    ref, qc, scores = cfg["reference"], dict[str, Any](), dict[str, Any]()
    stats = correct_subject(by_modality(inp), by_modality(out), by_modality(out, "field_"),
                            cfg.get("modality_types", {}), cfg["fit_spacing_mm"], cfg["iterations"],
                            cfg["spline_distance_mm"], enabled=cfg["enabled"], reference=ref, qc=qc, scores=scores)
    qc_seconds = write_step_scores(out["scores"], scores.get("by_modality", {}), scores.get("seconds", 0.0))
    n4_qc(qc["before"], qc["after"], qc["field"], qc["spacing_zyx"], out["qc"], f"{subject}: N4 ({ref})")
    return {**stats, "qc_seconds": qc_seconds}


def skullstrip(subject: str, inp: dict, out: dict, cfg: dict, threads: int = 1) -> dict:
    from voxflow.preprocess.skullstrip import strip_subject
    from voxflow.qc.figures import mask_qc
    from voxflow.qc.subject import Timer, mask_quality, write_step_scores

    tpl, qc = cfg.get("template") or {}, dict[str, Any]()
    info = strip_subject(by_modality(inp), cfg["reference"], by_modality(out), out["mask"], cfg["method"],
                         modality=cfg.get("modality"), threshold=cfg["threshold"], head_template=tpl.get("head"),
                         template_brain_mask=tpl.get("brain_mask"), threads=threads, qc=qc)
    mask_qc(qc["image"], qc["mask"], qc["spacing_zyx"], out["qc"], f"{subject}: brain mask ({info['method']})")
    with Timer() as t:  # no brain extraction (method none): the mask is the image's extent, nothing to score
        scores = {"mask": mask_quality(qc["mask"], qc["spacing_zyx"])} if cfg["method"] != "none" else {}
    write_step_scores(out["scores"], scores, t.seconds)
    return info


def mni(subject: str, inp: dict, out: dict, cfg: dict, threads: int = 1) -> dict:
    from voxflow.preprocess.mni import register_subject
    from voxflow.qc.figures import registration_qc

    qc: dict = {}
    info = register_subject(by_modality(inp), cfg["reference"], inp["mask"], inp.get("label"), inp["template"],
                            by_modality(out), out["mask"], out.get("label"), out["xfm"], cfg["transform"],
                            cfg["interpolation"], qc=qc)
    registration_qc(qc["image"], qc["template"], qc["spacing_zyx"], out["qc"],
                    f"{subject}: in MNI152 ({cfg['transform']})")
    from voxflow.core.layout import template_files

    qc_seconds = write_mni_scores(out["scores"], qc, cfg["reference"], template_files(inp["template"]),
                                  brain_extracted=cfg.get("brain_extracted", True))
    return {**info, "qc_seconds": qc_seconds}


def write_mni_scores(path: str, qc: dict, reference: str, template: dict, brain_extracted: bool = True) -> float:
    """Tissue contrast per registered modality and the reference's fit to the template (the brain mask's Dice with
    the template's only when skull stripping made one). The template's maps are read here (small, the template's
    grid); the subject's arrays are those the step holds."""
    import SimpleITK as sitk

    from voxflow.qc.subject import Timer, template_fit, tissue_contrast, write_step_scores

    with Timer() as t:
        tpl = {k: sitk.GetArrayFromImage(sitk.ReadImage(template[k], sitk.sitkFloat32)) for k in ("mask", "gm", "wm")}
        brain = qc["mask"]
        sp = qc["spacing_zyx"]
        scores = {m: tissue_contrast(img, brain, tpl["gm"], tpl["wm"], sp) for m, img in qc["images"].items()}
        fit = template_fit(qc["image"], qc["template"], tpl["mask"], brain, sp)
        scores[reference].update({k: v for k, v in fit.items() if k != "mask_dice_template"})
        if brain_extracted:
            scores["mask"] = {"mask_dice_template": fit["mask_dice_template"]}
    return write_step_scores(path, scores, t.seconds)


def to_zarr(subject: str, inp: dict, out: dict, cfg: dict, threads: int = 1) -> dict:
    """Normalize intensities inside the brain/foreground mask and write the subject's zarr store.

    Per-modality methods (`normalize.per_modality` over `normalize.method`); dataset-level methods
    read the statistics learned over the training subjects (input `normalization`).
    SimpleITK, not ANTs, for I/O here: importing antspyx costs seconds per job and nothing
    below needs it (both use ITK's LPS geometry, so origin/spacing/direction agree).
    """
    import SimpleITK as sitk

    from voxflow.preprocess.normalize import normalize
    from voxflow.preprocess.store import write_subject_store

    mods = cfg["modalities"]
    native = cfg.get("space") == "native"
    mask_img, mask = read_space_mask(subject, inp["mask"], native)
    methods = cfg["methods"]  # resolved once per modality (voxflow.settings.ChainSettings.norm_methods)
    learned = json.loads(Path(inp["normalization"]).read_text())["modalities"] if inp.get("normalization") else {}
    missing = cfg.get("missing") or {}  # input.missing: synthesize: a stand-in until complete_subject fills it
    chans = [np.zeros(mask.shape, np.float32) if m in missing else
             normalize(sitk.GetArrayFromImage(sitk.ReadImage(inp[f"img_{m}"], sitk.sitkFloat32)), mask,
                       methods[m], tuple(cfg["percentiles"]), cfg.get("window"), learned.get(m)) for m in mods]
    image = np.stack(chans)
    label = sitk.GetArrayFromImage(sitk.ReadImage(inp["label"])).astype(np.uint8) if inp.get("label") else None
    xfm_dir = Path(inp["xfm"])
    transforms = json.loads((xfm_dir / "transforms.json").read_text())
    transforms["dir"] = str(xfm_dir.resolve())
    transforms["native_reference"] = str(Path(cfg["native_reference"]).resolve())
    extra = {"subject": subject, "normalization": methods, **({"space": "native"} if native else {}),
             **({"missing_modalities": missing} if missing else {})}
    write_subject_store(out["zarr"], image, mask, label, mods, mask_img.GetSpacing()[::-1], mask_img.GetOrigin(),
                        np.array(mask_img.GetDirection()).reshape(3, 3), transforms, dtype=cfg["dtype"],
                        chunk=cfg["chunk"], compressor=cfg["compressor"], clevel=cfg["clevel"],
                        fg_samples=cfg["fg_samples"], extra_attrs=extra)
    return {"shape": list(image.shape), "normalization": methods}


def read_space_mask(subject: str, path: str, native: bool):
    """The brain/foreground mask on the store's grid (image, uint8 array); an empty one is the subject's problem."""
    import SimpleITK as sitk

    mask_img = sitk.ReadImage(path)
    mask = sitk.GetArrayFromImage(mask_img).astype(np.uint8)
    if not np.any(mask):
        raise InputError(subject, path, f"{'foreground' if native else 'brain'} mask is empty in "
                                        f"{'native' if native else 'MNI'} space")
    return mask_img, mask


def space_mask(subject: str, inp: dict, out: dict, cfg: dict, threads: int = 1) -> dict:
    """The last step of a chain that stops before to_zarr (dataset-level normalization): the mask check that
    to_zarr would make, so that a subject it would fail on is excluded with its chain, not in a job after the
    cohort's statistics (where a failure would stop the run)."""
    _, mask = read_space_mask(subject, inp["mask"], cfg.get("space") == "native")
    return {"mask_voxels": int(mask.sum())}


def denoise(subject: str, inp: dict, out: dict, cfg: dict, threads: int = 1) -> dict:
    from voxflow.preprocess.denoise import denoise_subject

    return denoise_subject(by_modality(inp), by_modality(out), cfg.get("modality_types") or {},
                           modalities=cfg.get("modalities_to_denoise"), noise_model=cfg["noise_model"],
                           patch_radius=cfg["patch_radius"], search_radius=cfg["search_radius"],
                           shrink_factor=cfg["shrink_factor"])


def native(subject: str, inp: dict, out: dict, cfg: dict, threads: int = 1) -> dict:
    """Native space: crop to the foreground and resample to the target spacing (no template)."""
    from voxflow.preprocess.native import native_subject
    from voxflow.qc.figures import panel_rows
    from voxflow.qc.subject import Timer, ct_crop, write_step_scores

    qc: dict = {}
    info = native_subject(subject, by_modality(inp), cfg["reference"], cfg.get("modality_types") or {},
                          inp.get("mask"), inp.get("label"), by_modality(out), out["mask"], out.get("label"),
                          out["xfm"],
                          cfg["spacing_mm"], crop=cfg["crop"], margin_mm=cfg["crop_margin_mm"],
                          body_threshold_hu=cfg["body_threshold_hu"], interpolation=cfg["interpolation"],
                          anisotropy_threshold=cfg["anisotropy_threshold"], qc=qc)
    image = qc["image"]
    is_ct = is_ct_modality(cfg.get("modality_types"), cfg["reference"])
    if is_ct:
        lo, hi = -160.0, 240.0  # abdominal soft-tissue window (level 40, width 400 HU)
    else:
        lo, hi = np.percentile(image[qc["mask"]], [1, 99.5]) if qc["mask"].any() else (image.min(), image.max())
    sp = " x ".join(f"{s:g}" for s in cfg["spacing_mm"])
    panel_rows([("image + foreground", image, dict(vmin=lo, vmax=hi))], qc["spacing_zyx"], out["qc"],
               f"{subject}: native space, cropped, {sp} mm", overlays=[(0, qc["mask"], "red")])
    with Timer() as t:
        scores = {cfg["reference"]: ct_crop(image, qc["mask"], qc["spacing_zyx"])} if is_ct else {}
    write_step_scores(out["scores"], scores, t.seconds)
    return info


def qc_scores(subject: str, inp: dict, out: dict, cfg: dict, threads: int = 1) -> dict:
    """qc/<subject>/scores.json: the scores the steps wrote, merged (voxflow.qc.subject)."""
    from voxflow.qc.subject import merge_subject_scores

    return {"steps": merge_subject_scores(subject, inp, out["scores"], skip=cfg.get("missing") or ())["steps"]}


def normalization_stats(subject: str, inp: dict, out: dict, cfg: dict, threads: int = 1) -> dict:
    """Learn the dataset-level normalization over the training subjects (split.json's train + val
    when there is a split, else every subject) with dask; write normalization.json."""
    from voxflow.preprocess.dataset_norm import learn
    from voxflow.core.atomic import write_json_atomic

    if inp.get("split"):
        from voxflow.core.split import training_subjects

        subjects = training_subjects(json.loads(Path(inp["split"]).read_text()))
    else:  # no labels, no split: the whole cohort
        subjects = subject_lists(inp, cfg)["subjects"]
    paths = cfg["paths"]  # templates with {subject} and {modality}
    files = {s: {"images": {m: paths["image"].format(subject=s, modality=m) for m in cfg["modalities"]},
                 "mask": paths["mask"].format(subject=s),
                 "label": paths["label"].format(subject=s) if paths.get("label") else None} for s in subjects}
    methods = cfg["methods"]
    nyul = cfg.get("nyul") or {}
    result = learn(files, methods, scheduler=cfg["scheduler"], ct_percentiles=cfg["percentiles"],
                   nyul_percentiles=nyul.get("percentiles", (1, 10, 20, 30, 40, 50, 60, 70, 80, 90, 99)),
                   scale=nyul.get("scale", (0.0, 1.0)), n_samples=cfg["samples_per_subject"])
    result["space"] = cfg.get("space", "mni")
    write_json_atomic(result, out["normalization"])
    return {"subjects": len(subjects), "methods": methods}


def template(subject: str, inp: dict, out: dict, cfg: dict, threads: int = 1) -> dict:
    from voxflow.preprocess.mni import write_template

    write_template(int(cfg["resolution_mm"]), out["image"], out["mask"], out.get("gm"), out.get("wm"))
    return {}


def chain(subject: str, inp: dict, out: dict, cfg: dict, threads: int = 1) -> dict:
    """A subject's whole preprocessing chain in one job: the steps voxflow.pipeline.chain builds from the run's settings
    (the same list the per-step rules are generated from), run in one process; always ends with the subject's
    status file with `on_error: exclude` (voxflow.pipeline.chain.run_chain)."""
    from voxflow.pipeline.chain import RawSubject, build_chain, fused_steps, run_chain
    from voxflow.settings import ChainSettings

    cs = ChainSettings.from_json(cfg["settings"], has_label=bool(cfg["has_label"]))
    problem = cfg["raw"].get("problem")
    raw = RawSubject(images=cfg["raw"]["images"], label=cfg["raw"].get("label"),
                     problem=tuple(problem) if problem else None, missing=cfg["raw"].get("missing"))
    specs = fused_steps(build_chain(cs, cfg["root"], cfg.get("normalization")), subject, raw, cs.dataset_norm,
                        demo=bool(cfg.get("demo")))
    return run_chain(subject, specs, on_error=cfg.get("on_error", "stop"), status=out.get("status"),
                     store=cfg.get("store"), qc_dir=out.get("qc"), threads=threads)


def preprocess_subject(settings: Mapping[str, Any], subject: str, images: Mapping[str, str], work_dir: str | Path,
                       normalization: str | None = None, threads: int = 1,
                       progress: Callable[[str], None] | None = None) -> str:
    """One scan through the workflow's chain, outside Snakemake (`voxflow predict`): `settings` is a trained
    model's settings.json, `images` modality -> raw file. Writes the intermediate files, QC images and the
    store under `work_dir`; returns the store's path. A bad scan raises InputError (subject, file, problem)."""
    from voxflow.preprocess.mni import write_template

    cs = ChainSettings.from_json(settings, has_label=False)
    missing = [m for m in cs.modalities if not images.get(m)]
    if missing:
        raise InputError(subject, "-", f"no file for modalit{'y' if len(missing) == 1 else 'ies'} {missing} "
                                       f"(the model needs {list(cs.modalities)})")
    root = str(work_dir)
    steps = build_chain(cs, root, normalization)
    if cs.space == "mni":
        tpl = template_paths(root, cs.preprocess["mni"]["resolution_mm"])
        if not all(os.path.exists(p) for p in tpl.values()):
            write_template(int(cs.preprocess["mni"]["resolution_mm"]), tpl["image"], tpl["mask"], tpl["gm"], tpl["wm"])
    raw = RawSubject(images={m: str(images[m]) for m in cs.modalities})
    specs = [step_spec(st, subject, raw) for st in steps]
    run_chain(subject, specs, on_error="stop", threads=threads, progress=progress)
    return fill(store_pattern(root), subject)
