"""A subject's preprocessing chain, defined once as data, and its runner.

`build_chain` lists the steps (validate ... to_zarr) with their files and config, ordered by their files
(a step comes after the steps that write its inputs). From that one list the workflow generates either one
rule per step or one job per subject (workflow/rules/preprocess.smk), and `voxflow predict` runs the same
steps for a scan outside Snakemake (`preprocess_subject`). Paths are patterns with `{subject}` under an
output root; the step functions themselves are in voxflow.preprocess.steps (table: voxflow.pipeline.registry).
"""

from __future__ import annotations

import graphlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable, Mapping
from typing import Any

from voxflow.errors import InputError, at_step, failed_step, one_line, subject_problem
from voxflow.core.atomic import remove_path
from voxflow.settings import ChainSettings
from voxflow.core.layout import OutputLayout, fill, qc_path, qc_scores_path, store_pattern, sub_path, template_paths
from voxflow.core.layout import validation_table

log = logging.getLogger("voxflow.chain")


@dataclass(frozen=True)
class RawSubject:
    """A subject's raw files: modality -> path ("" when the layout found none), the label, and a (file,
    problem) that the input layout found at parse time (an empty sheet cell)."""

    images: Mapping[str, str]
    label: str | None = None
    problem: tuple[str, str] | None = None
    # input.missing: synthesize: modality -> why it is missing (voxflow.inputs.missing); its path is ""
    missing: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Step:
    """One step of the chain: its files (patterns with {subject}, keyed as the step function reads them),
    its config, and how a rule declares it."""

    name: str
    inputs: Mapping[str, str]
    outputs: Mapping[str, str]
    config: Mapping[str, Any]
    folders: frozenset[str] = frozenset()  # outputs that are directories
    qc: str | None = None  # the output that is the step's QC figure (a report item)
    weight: str = "heavy"  # resources: config.resources mem_mb_<weight> / runtime_min_<weight>
    # config that depends on the subject's raw files (validate, ingest, to_zarr)
    subject_config: Callable[[RawSubject], dict] | None = None
    raw_inputs: bool = False  # its inputs are the subject's raw files (validate)


def image_path(root: str, step: str, modality: str) -> str:
    """A step's image of a modality ("{modality}": the pattern of every modality's). Float intermediates are
    uncompressed NIfTI: gzip shrinks float32 scans by ~10% and costs ~1.3 s per 1 mm volume, a third of the
    preprocessing time. Masks and labels stay gzipped."""
    return sub_path(root, step, f"{modality}.nii")


def label_path(root: str, step: str) -> str:
    """A step's label (ingest's, and the stores' grid's)."""
    return sub_path(root, step, "label.nii.gz")


def _images(root: str, step: str, mods, prefix: str = "img_") -> dict[str, str]:
    return {f"{prefix}{m}": image_path(root, step, m) for m in mods}


def space_mask_path(root: str, cs: ChainSettings) -> str:
    """The brain (MNI) or foreground (native) mask on the stores' grid."""
    return sub_path(root, cs.space_step, "brain_mask.nii.gz" if cs.space == "mni" else "mask.nii.gz")


def build_chain(cs: ChainSettings, root: str, normalization: str | None = None) -> list[Step]:
    """The chain's steps for these settings, in the order their files impose. `normalization`: the dataset-level
    normalization file to_zarr reads (model/normalization.json), when a modality's method needs one."""
    pre, mods, ref = cs.preprocess, list(cs.modalities), cs.reference
    types = dict(cs.modality_types)
    label = cs.has_label
    ingest_label = {"label": label_path(root, "ingest")} if label else {}
    pre_n4 = "denoise" if cs.denoise else "coreg"
    steps = [
        Step("validate", inputs={}, raw_inputs=True, weight="light",
             outputs={"table": validation_table(root)},
             config={"reference": ref, "label_values": cs.label_values and list(cs.label_values)},
             subject_config=lambda raw: {"images": dict(raw.images), "label": raw.label, "problem": raw.problem,
                                         **({"missing": dict(raw.missing)} if raw.missing else {})}),
        Step("ingest", inputs={"validation": validation_table(root)}, weight="light",
             outputs={**_images(root, "ingest", mods), **ingest_label, "info": sub_path(root, "ingest", "info.json")},
             config={"modalities": mods, "reference": ref, "modality_types": types,
                     "label_values": cs.label_values and list(cs.label_values)},
             subject_config=lambda raw: {"expected": {"images": dict(raw.images), "label": raw.label},
                                         "problem": raw.problem,
                                         **({"missing": dict(raw.missing)} if raw.missing else {})}),
        Step("coreg", inputs=_images(root, "ingest", mods),
             outputs={**_images(root, "coreg", mods),
                      **{f"xfm_{m}": sub_path(root, "coreg", f"{m}_to_{ref}.mat") for m in mods if m != ref},
                      "info": sub_path(root, "coreg", "info.json"), "scores": sub_path(root, "coreg", "scores.json")},
             config={"modalities": mods, "reference": ref}),
    ]
    if cs.denoise:
        steps.append(Step("denoise", inputs=_images(root, "coreg", mods), outputs=_images(root, "denoise", mods),
                          config={**pre["denoise"], "modality_types": types,
                                  "modalities_to_denoise": pre["denoise"]["modalities"]}))
    if not cs.ct_direct:
        steps.append(Step("n4", inputs=_images(root, pre_n4, mods), qc="qc",
                          outputs={**_images(root, "n4", mods),
                                   **{f"field_{m}": sub_path(root, "n4", f"{m}_bias.nii.gz") for m in mods},
                                   "qc": qc_path(root, "n4"), "scores": sub_path(root, "n4", "scores.json")},
                          config={**pre["n4"], "reference": ref, "modality_types": types}))
        steps.append(Step("skullstrip", inputs=_images(root, "n4", mods), qc="qc",
                          outputs={**_images(root, "brain", mods), "mask": sub_path(root, "brain", "brain_mask.nii.gz"),
                                   "qc": qc_path(root, "skullstrip"), "scores": sub_path(root, "brain", "scores.json")},
                          config={**pre["skullstrip"], "reference": ref}))
    brain = {} if cs.ct_direct else {"mask": sub_path(root, "brain", "brain_mask.nii.gz")}
    space, grid = cs.space_step, _images(root, cs.space_step, mods)
    space_label = {"label": label_path(root, space)} if label else {}
    xfm = OutputLayout(root).transforms_dir(space)
    if space == "mni":
        tpl = template_paths(root, pre["mni"]["resolution_mm"])
        steps.append(Step("mni", qc="qc", folders=frozenset({"xfm"}),
                          # the template's mask and tissue maps come with its image (one job writes the four; the
                          # step finds them by name, template_files): 3 declared files less per subject, ~1 ms each
                          # while Snakemake builds a 10 000-subject DAG
                          inputs={**_images(root, "brain", mods), **brain, **ingest_label, "template": tpl["image"]},
                          outputs={**grid, "mask": space_mask_path(root, cs), **space_label, "xfm": xfm,
                                   "qc": qc_path(root, "mni"), "scores": sub_path(root, "mni", "scores.json")},
                          config={**pre["mni"], "reference": ref,
                                  "brain_extracted": not cs.ct_direct and pre["skullstrip"]["method"] != "none"}))
    else:
        steps.append(Step("native", qc="qc", folders=frozenset({"xfm"}),
                          inputs={**_images(root, pre_n4 if cs.ct_direct else "brain", mods), **brain, **ingest_label},
                          outputs={**grid, "mask": space_mask_path(root, cs), **space_label, "xfm": xfm,
                                   "qc": qc_path(root, "native"), "scores": sub_path(root, "native", "scores.json")},
                          config={**pre["native"], "reference": ref, "modality_types": types}))
    steps.append(Step("to_zarr", weight="light", folders=frozenset({"zarr"}),
                      inputs={**grid, "mask": space_mask_path(root, cs), **space_label, "xfm": xfm,
                              **({"normalization": normalization} if normalization else {})},
                      outputs={"zarr": store_pattern(root)},
                      config={**pre["normalize"], **pre["zarr"], "modalities": mods, "space": cs.space,
                              "methods": dict(cs.norm_methods)},
                      subject_config=lambda raw: {"native_reference": raw.images[ref],
                                                  **({"missing": dict(raw.missing)} if raw.missing else {})}))
    # the subject's quality scores, one file from the steps' (voxflow.qc.subject); the cohort rule qc_flags reads it
    # a missing modality's stand-in (the reference image, voxflow.inputs.missing) is not that modality: no scores of it
    steps.append(Step("qc_scores", weight="light", outputs={"scores": qc_scores_path(root)}, config={},
                      inputs={st.name: st.outputs["scores"] for st in steps if "scores" in st.outputs},
                      subject_config=lambda raw: {"missing": dict(raw.missing)} if raw.missing else {}))
    return order_by_files(steps)


def order_by_files(steps: list[Step]) -> list[Step]:
    """The steps in an order where each comes after the steps that write its inputs (ties: as listed)."""
    writer = {path: st.name for st in steps for path in st.outputs.values()}
    graph = {st.name: {writer[p] for p in st.inputs.values() if p in writer} for st in steps}
    sorter = graphlib.TopologicalSorter(graph)
    sorter.prepare()
    rank = {st.name: i for i, st in enumerate(steps)}
    order: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=rank.__getitem__)
        order += ready
        sorter.done(*ready)
    by_name = {st.name: st for st in steps}
    return [by_name[n] for n in order]


def raw_files(raw: RawSubject, demo: bool = False) -> dict[str, str]:
    """validate's inputs: the raw files that exist (a missing one fails that subject's validation, not the
    whole DAG); every one for the demo layout, whose files the workflow generates."""
    files = {f"img_{m}": p for m, p in raw.images.items()}
    if raw.label:
        files["label"] = raw.label
    return {k: v for k, v in files.items() if v and (demo or os.path.exists(v))}


def step_spec(st: Step, subject: str, raw: RawSubject, demo: bool = False) -> dict:
    """The step's files and config for one subject, as its own rule would pass them (`voxflow step NAME --io`)."""
    inputs = raw_files(raw, demo) if st.raw_inputs else {k: fill(v, subject) for k, v in st.inputs.items()}
    cfg = {**st.config, **(st.subject_config(raw) if st.subject_config else {})}
    return {"name": st.name, "input": inputs, "output": {k: fill(v, subject) for k, v in st.outputs.items()},
            "config": cfg}


def fused_steps(steps: list[Step], subject: str, raw: RawSubject, dataset_norm: bool, demo: bool = False) -> list[dict]:
    """The steps one job per subject runs. With dataset-level normalization to_zarr waits for the cohort's
    statistics (a job of its own): the chain ends with its check of the mask instead (step space_mask), so that
    a subject it would fail on is excluded with its chain."""
    specs = [step_spec(st, subject, raw, demo) for st in steps if not (dataset_norm and st.name == "to_zarr")]
    if dataset_norm:
        to_zarr = next(st for st in steps if st.name == "to_zarr")
        specs.append({"name": "space_mask", "input": {"mask": fill(to_zarr.inputs["mask"], subject)}, "output": {},
                      "config": {"space": to_zarr.config["space"]}})
    return specs


def run_chain(subject: str, specs: list[dict], on_error: str = "stop", status: str | None = None,
              store: str | None = None, qc_dir: str | None = None, threads: int = 1,
              progress: Callable[[str], None] | None = None) -> dict:
    """A subject's steps in one process (one job per subject, or `voxflow predict`).

    One process instead of seven saves each step's start-up (importing antspyx/torch). Ends with the subject's
    status file (`status`). A failing step: with `on_error: exclude` the status names the step, the file and the
    one-line problem, and its files and those of the later steps are removed, the store too (nothing stale looks
    complete); with `stop` (and for a failure of the machine) the error is raised, naming the step that failed
    (voxflow.errors.at_step: an InputError stays one, anything else comes in a StepError)."""
    from voxflow.pipeline.registry import step_function
    from voxflow.pipeline.status import validation_rows, write_status

    table = next((sp["output"].get("table") for sp in specs if sp["name"] == "validate"), None)
    done: dict[str, float] = {}
    for i, spec in enumerate(specs):
        name, t0 = spec["name"], time.perf_counter()
        if progress:
            progress(name)
        try:
            info = step_function(name)(subject, spec["input"], spec["output"], spec["config"], threads)
        except Exception as exc:
            failed = at_step(exc, name)
            if on_error != "exclude" or not status or machine_failure(failed_step(failed, name)[1]):
                if failed is exc:
                    raise
                raise failed from exc
            failure = failure_record(failed)
            if name == "ingest" and any(sev == "error" for _, _, sev in validation_rows(table)):
                failure["step"] = "validate"  # ingest stops on the validation table's first error: validation found it
            for later in specs[i:]:
                for path in later["output"].values():
                    remove_path(path)
            if store:
                remove_path(store)
            if qc_dir:  # the job's QC folder: the figures of the steps that ran (none: empty)
                Path(qc_dir).mkdir(parents=True, exist_ok=True)
            write_status(status, subject, validation=table, failure=failure)
            line = subject_problem(subject, failure["file"], failure["problem"])
            print(f"voxflow EXCLUDED [{failure['step']}] {line}", file=sys.stderr)
            return {"excluded": failure, "seconds": done}
        done[name] = round(time.perf_counter() - t0, 2)
        log.info("chain %s subject=%s: %s done in %.1fs %s", name, subject, name, done[name],
                 json.dumps(info, default=str)[:500] if info else "")
    if status:
        write_status(status, subject, store=store, validation=table)
    return {"seconds": done}


def machine_failure(exc: Exception) -> bool:
    """A failure of the machine, not of the subject's data (out of memory, a full disk): the job fails, so that
    it is retried (a cluster profile retries with more memory) rather than the subject excluded for good."""
    import errno

    return isinstance(exc, MemoryError) or (isinstance(exc, OSError)
                                            and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.ENOMEM))


def failure_record(exc: Exception) -> dict:
    """step, file and one-line problem of a failed step (its step as voxflow.errors.at_step recorded it, else "?"):
    an InputError's own, else the exception's type and first line."""
    step, cause = failed_step(exc, "?")
    if isinstance(cause, InputError):
        return {"step": step, "file": cause.file, "problem": cause.problem}
    return {"step": step, "file": "-", "problem": one_line(cause)}

