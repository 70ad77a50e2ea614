"""Where things are: the path patterns under output_dir and in a model folder, defined once (the rules, the steps,
the report, export-model and voxflow predict all build their paths here).

`OutputLayout(output_dir)` names every file and folder of a run: per-subject patterns take the subject (default
"{subject}", the Snakemake wildcard), per-rule logs and benchmarks the rule and the job's name. `ModelFolder(path)`
names the files of a model folder (<output_dir>/model, a configuration's model/<configuration>/, or any trained
model folder of predict.model_dir). The module-level functions (sub_path, qc_path, store_pattern, fold_model, ...)
are the same patterns for code that has only a root or a model folder at hand."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

# The folders of an output_dir.
BENCHMARKS_DIR = "benchmarks"  # <rule>/<job>.tsv: Snakemake's benchmark of each job
COMPLETED_DIR = "completed"  # <subject>.zarr: a store with its missing modalities synthesized (input.missing)
DEMO_DIR = "demo"  # the generated demo cohort (input.layout: demo): raw/, truth/
EVALUATION_DIR = "evaluation"
LOGS_DIR = "logs"  # <rule>/<job>.log
MODEL_DIR = "model"  # the trained model: a model folder (ModelFolder)
PREDICTIONS_DIR = "predictions"
PREPROCESS_DIR = "preprocess"  # <subject>/<step>/: the chain's intermediate files
QC_DIR = "qc"  # <subject>/: a subject's QC figures and scores; the cohort's QC tables
QC_SYNTHESIS_DIR = "qc_synthesis"  # <subject>.png: a completed subject's modalities
REPORT_DIR = "report"
STATUS_DIR = "status"  # subjects/<subject>.json, cohort.json and the report's subject lists
TEMPLATE_DIR = "template"  # the MNI152 template at the registration's resolution
VALIDATION_DIR = "validation"  # subjects/<subject>.tsv: the input problems; problems.tsv/.txt: the cohort's
ZARR_DIR = "zarr"  # <subject>.zarr: the preprocessed stores
# The folders of output_dir that the workflow writes, which an input root must not be in (voxflow.settings.checks).
# demo/ is written only by the demo layout, whose raw data is not an input root: a cohort the demo generated can be
# read back with the folders layout (and config/examples/liver_ct.yaml keeps its data in output_dir/data).
WRITTEN_FOLDERS = (BENCHMARKS_DIR, EVALUATION_DIR, LOGS_DIR, MODEL_DIR, PREDICTIONS_DIR, PREPROCESS_DIR, QC_DIR,
                   REPORT_DIR, STATUS_DIR, TEMPLATE_DIR, VALIDATION_DIR, ZARR_DIR)

# The cohort's QC tables, in qc/ next to the subjects' QC folders (so no subject can have these names).
QC_SCORES_FILE = "scores.tsv"
QC_FLAGS_FILE = "flags.tsv"

# The files of a model folder (<output_dir>/model, or a configuration's model/<configuration>/ of
# model.configurations): what the training writes, export-model packs and voxflow predict reads.
MODEL_FILE = "model_final.pt"  # fold_<k>/: the trained network, with its training curve
CHECKPOINT_FILE = "checkpoint_latest.pt"  # fold_<k>/: where a killed fold resumes
CURVE_CSV_FILE = "curve.csv"  # fold_<k>/ (and synthesis/): the training curve
CURVE_PNG_FILE = "curve.png"  # fold_<k>/: its figure
VAL_PREDICTIONS_FILE = "val_predictions.npz"  # fold_<k>/: the fold's validation subjects, predicted
VAL_PROBABILITIES_FILE = "val_probabilities.npz"  # fold_<k>/, several configurations: their probabilities
PLANS_FILE = "plans.json"
SETTINGS_FILE = "settings.json"
POSTPROCESSING_FILE = "postprocessing.json"
INFERENCE_FILE = "inference.json"  # a model of several configurations: the choice, in place of postprocessing.json
FINGERPRINT_FILE = "fingerprint.json"
NORMALIZATION_FILE = "normalization.json"
SPLIT_FILE = "split.json"
STORES_FILE = "stores.json"
LOWRES_DIR = "lowres"  # 3d_cascade/lowres/: a cascade's low-resolution stage, inside its full-resolution folder
SYNTHESIS_DIR = "synthesis"  # the missing-modality synthesis model (input.missing: synthesize)
GENERATOR_FILE = "generator.pt"  # synthesis/: the generator
SYNTHESIS_CHECKPOINT_FILE = "checkpoint.pt"  # synthesis/: where a killed training resumes
SYNTHESIS_SUMMARY_FILE = "synthesis.json"  # synthesis/: its validation metrics and subjects
FOLD_MODELS = f"fold_*/{MODEL_FILE}"  # glob of the fold models in a model folder
ANY_FOLD_MODEL = f"fold_<k>/{MODEL_FILE}"  # how a message names a missing fold model


def fold_name(fold: int | str) -> str:
    """A fold's folder name, fold_<k>."""
    return f"fold_{fold}"


def fold_index(name: str) -> int | None:
    """The fold number of a folder named fold_<k>; None for any other name."""
    m = re.fullmatch(r"fold_(\d+)", name)
    return int(m.group(1)) if m else None


def prediction_name(subject: str, space: str = "native") -> str:
    """A subject's prediction file: <subject>_seg.nii.gz in its native space, <subject>_seg_<space>.nii.gz on the
    stores' grid (mni, resampled)."""
    suffix = "" if space == "native" else f"_{space}"
    return f"{subject}_seg{suffix}.nii.gz"


def probability_name(subject: str) -> str:
    """A subject's foreground probability in its native space (infer.probabilities)."""
    return f"{subject}_prob.nii.gz"


def prediction_sidecar_name(subject: str) -> str:
    """What a subject's prediction was made from (the model, the store, any synthesized modality)."""
    return f"{subject}_seg.json"


def qc_figure_name(step: str) -> str:
    """A step's QC figure in the subject's QC folder: <step>.png."""
    return f"{step}.png"


def demo_files(raw_dir: str | os.PathLike, truth_dir: str | os.PathLike, subject: str,
               modalities: list[str] | tuple[str, ...]) -> dict[str, str]:
    """A generated demo subject's files: <raw_dir>/<subject>/<modality>.nii.gz and seg.nii.gz (what the demo layout
    reads as the subject's scans and label), <truth_dir>/<subject>_brainmask.nii.gz and <subject>_truth.json."""
    raw, truth = os.path.join(raw_dir, subject), os.fspath(truth_dir)
    return {**{m: os.path.join(raw, f"{m}.nii.gz") for m in modalities}, "seg": os.path.join(raw, "seg.nii.gz"),
            "brainmask": os.path.join(truth, f"{subject}_brainmask.nii.gz"),
            "truth": os.path.join(truth, f"{subject}_truth.json")}


@dataclass(frozen=True)
class ModelFolder:
    """The files of a model folder `path`: <output_dir>/model, a configuration's model/<configuration>/, or the
    trained model folder of predict.model_dir."""

    path: str

    def file(self, name: str) -> str:
        """<path>/<name>."""
        return os.path.join(self.path, name)

    def configuration(self, configuration: str | None) -> ModelFolder:
        """model.configurations: a configuration's own model folder, <path>/<configuration> (3d_cascade/lowres:
        a cascade's low-resolution stage); None: this folder."""
        return ModelFolder(os.path.join(self.path, configuration)) if configuration else self

    def fold_dir(self, fold: int | str, configuration: str | None = None) -> str:
        """<path>[/<configuration>]/fold_<k>."""
        return self.configuration(configuration).file(fold_name(fold))

    def fold_file(self, fold: int | str, name: str, configuration: str | None = None) -> str:
        """<path>[/<configuration>]/fold_<k>/<name>: MODEL_FILE, CURVE_PNG_FILE, VAL_PREDICTIONS_FILE, ..."""
        return os.path.join(self.fold_dir(fold, configuration), name)

    def fold_model(self, fold: int | str, configuration: str | None = None) -> str:
        """<path>[/<configuration>]/fold_<k>/model_final.pt."""
        return self.fold_file(fold, MODEL_FILE, configuration)

    @property
    def plans(self) -> str:
        return self.file(PLANS_FILE)

    @property
    def settings(self) -> str:
        """What a scan needs to go through this model outside the workflow (the chain's and inference settings)."""
        return self.file(SETTINGS_FILE)

    @property
    def postprocessing(self) -> str:
        return self.file(POSTPROCESSING_FILE)

    @property
    def inference(self) -> str:
        return self.file(INFERENCE_FILE)

    @property
    def fingerprint(self) -> str:
        return self.file(FINGERPRINT_FILE)

    @property
    def normalization(self) -> str:
        return self.file(NORMALIZATION_FILE)

    @property
    def split(self) -> str:
        return self.file(SPLIT_FILE)

    @property
    def stores(self) -> str:
        return self.file(STORES_FILE)

    @property
    def synthesis_dir(self) -> str:
        return self.file(SYNTHESIS_DIR)

    @property
    def synthesis_model(self) -> str:
        """synthesis/generator.pt."""
        return os.path.join(self.synthesis_dir, GENERATOR_FILE)

    @property
    def synthesis_curve(self) -> str:
        return os.path.join(self.synthesis_dir, CURVE_CSV_FILE)

    @property
    def synthesis_summary(self) -> str:
        """synthesis/synthesis.json."""
        return os.path.join(self.synthesis_dir, SYNTHESIS_SUMMARY_FILE)


@dataclass(frozen=True)
class OutputLayout:
    """Every path of a run under its output_dir, `root`. Per-subject patterns take `subject` ("{subject}": the
    Snakemake wildcard; a subject ID: its file)."""

    root: str

    def at(self, *parts: str) -> str:
        """<root>/<parts...>."""
        return os.path.join(self.root, *parts)

    # --- status ------------------------------------------------------------------------------------------------
    def status(self, subject: str = "{subject}") -> str:
        """status/subjects/<subject>.json: the subject included (its store) or excluded (the step, the reason)."""
        return self.at(STATUS_DIR, "subjects", f"{subject}.json")

    @property
    def cohort_status(self) -> str:
        """status/cohort.json: every subject's status in one file."""
        return self.at(STATUS_DIR, "cohort.json")

    @property
    def predicted_subjects(self) -> str:
        """status/predicted.json (not under predictions/: a subject's folder could be named so)."""
        return self.at(STATUS_DIR, "predicted.json")

    @property
    def report_subjects(self) -> str:
        """status/report_subjects.json: the subjects the report's QC sections show."""
        return self.at(STATUS_DIR, "report_subjects.json")

    # --- inputs --------------------------------------------------------------------------------------------------
    @property
    def demo_raw(self) -> str:
        """demo/raw: the demo cohort's scans and labels, <subject>/<modality>.nii.gz, seg.nii.gz."""
        return self.at(DEMO_DIR, "raw")

    @property
    def demo_truth(self) -> str:
        """demo/truth: what the demo generator drew (brain masks, poses)."""
        return self.at(DEMO_DIR, "truth")

    def demo_files(self, modalities: list[str] | tuple[str, ...], subject: str = "{subject}") -> dict[str, str]:
        """A demo subject's files (demo_files): modality -> scan, seg, brainmask, truth."""
        return demo_files(self.demo_raw, self.demo_truth, subject, modalities)

    @property
    def validation_dir(self) -> str:
        return self.at(VALIDATION_DIR)

    def validation_table(self, subject: str = "{subject}") -> str:
        """validation/subjects/<subject>.tsv: the subject's input problems (an empty table: none)."""
        return os.path.join(self.validation_dir, "subjects", f"{subject}.tsv")

    @property
    def problems_table(self) -> str:
        """validation/problems.tsv: every subject's input problems."""
        return os.path.join(self.validation_dir, "problems.tsv")

    @property
    def problems_text(self) -> str:
        return os.path.join(self.validation_dir, "problems.txt")

    # --- preprocessing -------------------------------------------------------------------------------------------
    def template(self, resolution_mm: int) -> dict[str, str]:
        """The MNI152 template (image, brain mask, grey- and white-matter maps) at the registration's resolution,
        written once per run."""
        image = self.at(TEMPLATE_DIR, f"mni152_{resolution_mm}mm.nii.gz")
        return {"image": image, **template_files(image)}

    def preprocess_dir(self, subject: str = "{subject}") -> str:
        """preprocess/<subject>: the subject's intermediate files, one folder per step."""
        return self.at(PREPROCESS_DIR, subject)

    def step_file(self, step: str, name: str, subject: str = "{subject}") -> str:
        """preprocess/<subject>/<step>/<name>: a file of a step of the chain."""
        return os.path.join(self.preprocess_dir(subject), step, name)

    def transforms_dir(self, space_step: str, subject: str = "{subject}") -> str:
        """The subject's transforms to the stores' grid: preprocess/<subject>/xfm (the MNI registration, space_step
        mni), preprocess/<subject>/native/xfm (the native crop and resampling)."""
        if space_step == "mni":
            return os.path.join(self.preprocess_dir(subject), "xfm")
        return self.step_file(space_step, "xfm", subject)

    def store(self, subject: str = "{subject}") -> str:
        """zarr/<subject>.zarr: the subject's preprocessed store."""
        return self.at(ZARR_DIR, f"{subject}.zarr")

    # --- QC ------------------------------------------------------------------------------------------------------
    def qc_dir(self, subject: str = "{subject}") -> str:
        """qc/<subject>: the subject's QC figures and scores."""
        return self.at(QC_DIR, subject)

    def qc_figure(self, step: str, subject: str = "{subject}") -> str:
        """qc/<subject>/<step>.png (step "{step}": the pattern of every step's)."""
        return os.path.join(self.qc_dir(subject), qc_figure_name(step))

    def qc_subject_scores(self, subject: str = "{subject}") -> str:
        """qc/<subject>/scores.json: the subject's quality scores (the chain's qc_scores step)."""
        return os.path.join(self.qc_dir(subject), "scores.json")

    @property
    def qc_scores(self) -> str:
        """qc/scores.tsv: every included subject's quality scores (rule qc_flags)."""
        return self.at(QC_DIR, QC_SCORES_FILE)

    @property
    def qc_flags(self) -> str:
        """qc/flags.tsv: the outliers among them, worst first."""
        return self.at(QC_DIR, QC_FLAGS_FILE)

    # --- logs and benchmarks -------------------------------------------------------------------------------------
    def log(self, rule: str, name: str = "{subject}") -> str:
        """logs/<rule>/<name>.log: a job's log (name: the subject, or the cohort rule's own name)."""
        return self.at(LOGS_DIR, rule, f"{name}.log")

    def benchmark(self, rule: str, name: str = "{subject}") -> str:
        """benchmarks/<rule>/<name>.tsv: a job's run time, written by Snakemake."""
        return self.at(BENCHMARKS_DIR, rule, f"{name}.tsv")

    # --- model, synthesis ----------------------------------------------------------------------------------------
    @property
    def model_dir(self) -> str:
        """model: the model this run trains."""
        return self.at(MODEL_DIR)

    @property
    def model(self) -> ModelFolder:
        """The files of model/ (ModelFolder)."""
        return ModelFolder(self.model_dir)

    def completed(self, subject: str = "{subject}") -> str:
        """completed/<subject>.zarr: the subject's store with its missing modalities synthesized."""
        return self.at(COMPLETED_DIR, f"{subject}.zarr")

    def synthesis_qc(self, subject: str = "{subject}") -> str:
        """qc_synthesis/<subject>.png: a completed subject's modalities, the synthesized ones marked."""
        return self.at(QC_SYNTHESIS_DIR, f"{subject}.png")

    # --- predictions, evaluation, report -------------------------------------------------------------------------
    @property
    def predictions_dir(self) -> str:
        return self.at(PREDICTIONS_DIR)

    def prediction(self, subject: str = "{subject}", space: str = "native") -> str:
        """predictions/<subject>/<subject>_seg.nii.gz (native space), _seg_<space>.nii.gz (the stores' grid)."""
        return os.path.join(self.predictions_dir, subject, prediction_name(subject, space))

    def probabilities(self, subject: str = "{subject}") -> str:
        """predictions/<subject>/<subject>_prob.nii.gz (infer.probabilities)."""
        return os.path.join(self.predictions_dir, subject, probability_name(subject))

    def prediction_sidecar(self, subject: str = "{subject}") -> str:
        """predictions/<subject>/<subject>_seg.json."""
        return os.path.join(self.predictions_dir, subject, prediction_sidecar_name(subject))

    @property
    def evaluation_dir(self) -> str:
        return self.at(EVALUATION_DIR)

    def evaluation_chunk(self, chunk: str = "{chunk}") -> str:
        """evaluation/chunks/<chunk>.tsv: the metrics of one evaluate job's subjects."""
        return os.path.join(self.evaluation_dir, "chunks", f"{chunk}.tsv")

    @property
    def metrics(self) -> str:
        """evaluation/metrics.tsv: per subject, label and space."""
        return os.path.join(self.evaluation_dir, "metrics.tsv")

    @property
    def summary(self) -> str:
        """evaluation/summary.tsv: the cohort's."""
        return os.path.join(self.evaluation_dir, "summary.tsv")

    @property
    def report_html(self) -> str:
        """report/report.html: the cohort report."""
        return self.at(REPORT_DIR, "report.html")


def fold_models(model_dir: str | os.PathLike) -> list[Path]:
    """The fold models of a model folder, fold_<k>/model_final.pt (files), by fold number."""
    found = [(k, p) for p in Path(model_dir).glob(FOLD_MODELS)
             if (k := fold_index(p.parent.name)) is not None and p.is_file()]
    return [p for _, p in sorted(found, key=lambda kp: kp[0])]


def fold_dir(model_dir: str | os.PathLike, fold: int | str, configuration: str | None = None) -> str:
    """<model_dir>[/<configuration>]/fold_<k>."""
    return ModelFolder(os.fspath(model_dir)).fold_dir(fold, configuration)


def fold_model(model_dir: str | os.PathLike, fold: int | str, configuration: str | None = None) -> str:
    """<model_dir>[/<configuration>]/fold_<k>/model_final.pt."""
    return ModelFolder(os.fspath(model_dir)).fold_model(fold, configuration)


def fold_model_name(fold: int | str, configuration: str | None = None) -> str:
    """A fold model's name inside a model folder, '/'-separated (inference.json's and an archive's):
    [<configuration>/]fold_<k>/model_final.pt."""
    return "/".join([*([configuration] if configuration else []), fold_name(fold), MODEL_FILE])


def read_inference(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def inference_models(path: str | Path) -> list[str]:
    """The chosen models' paths (inference.json keeps them relative to its folder: a model folder moves whole)."""
    return [str(Path(path).parent / m) for m in read_inference(path)["models"]]


def sub_path(root: str, step: str, name: str) -> str:
    """Per-subject file of a step: <root>/preprocess/<subject>/<step>/<name> (OutputLayout.step_file)."""
    return OutputLayout(root).step_file(step, name)


def qc_path(root: str, step: str) -> str:
    """<root>/qc/<subject>/<step>.png (OutputLayout.qc_figure)."""
    return OutputLayout(root).qc_figure(step)


def qc_scores_path(root: str) -> str:
    """<root>/qc/<subject>/scores.json (OutputLayout.qc_subject_scores)."""
    return OutputLayout(root).qc_subject_scores()


def store_pattern(root: str) -> str:
    """<root>/zarr/<subject>.zarr (OutputLayout.store)."""
    return OutputLayout(root).store()


def validation_table(root: str) -> str:
    """<root>/validation/subjects/<subject>.tsv (OutputLayout.validation_table)."""
    return OutputLayout(root).validation_table()


def template_paths(root: str, resolution_mm: int) -> dict[str, str]:
    """The MNI152 template's files under `root` (OutputLayout.template)."""
    return OutputLayout(root).template(resolution_mm)


def template_files(image: str) -> dict[str, str]:
    """The files written with the template `image` (template_paths): its brain mask and tissue maps."""
    base = image[: -len(".nii.gz")]
    return {"mask": f"{base}_mask.nii.gz", "gm": f"{base}_gm.nii.gz", "wm": f"{base}_wm.nii.gz"}


def fill(pattern: str, subject: str) -> str:
    return pattern.replace("{subject}", subject)


def output_folders() -> list[tuple[str, str]]:
    """The folders of a run under output_dir and what each holds (`voxflow where`, `make demo`'s last lines)."""
    return [(REPORT_DIR, "report.html: the cohort report (self-contained, opens offline)"),
            (EVALUATION_DIR, "metrics.tsv (per subject, label, space), summary.tsv (mean, std, median, IQR)"),
            (PREDICTIONS_DIR, "<subject>/<subject>_seg.nii.gz: predictions in native space (+ _seg_mni, "
                              "or _seg_resampled in native-space runs: on the stores' grid)"),
            (MODEL_DIR, "plans.json, fingerprint.json, split.json, fold_<k>/ (model, curve.csv/png)"),
            (ZARR_DIR, "per-subject zarr stores (OME-Zarr)"),
            (QC_DIR, "QC images and scores.json per subject and step; scores.tsv, flags.tsv (cohort QC)"),
            (PREPROCESS_DIR, "intermediate NIfTI per step, transforms in <subject>/xfm"),
            (LOGS_DIR, "one log per rule and subject"), (BENCHMARKS_DIR, "run time per rule and subject")]
