"""Typed, resolved settings: what a run does, derived once from the validated config."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from collections.abc import Mapping
from typing import Any, ClassVar

# Dataset-level intensity normalizations: learned over the training subjects (model/normalization.json),
# applied by every subject's to_zarr, so the store is written after a cohort step.
DATASET_NORMALIZATIONS = frozenset({"ct_dataset", "nyul"})


def _frozen(d: Mapping) -> Mapping:
    return MappingProxyType(dict(d))


def modality_type(modality_types: Mapping[str, str] | None, modality: str) -> str:
    """A modality's type by input.modality_types: "mr" or "ct"; a modality it does not name is MR."""
    return (modality_types or {}).get(modality, "mr")


def is_ct_modality(modality_types: Mapping[str, str] | None, modality: str) -> bool:
    """Whether `modality` is CT by input.modality_types (the steps' config carries them as `modality_types`)."""
    return modality_type(modality_types, modality) == "ct"


@dataclass(frozen=True)
class ChainSettings:
    """What one subject's preprocessing chain needs (voxflow.pipeline.chain): from the workflow's config, or from a
    trained model's settings.json (`voxflow predict`), so both run the same chain."""

    modalities: tuple[str, ...]
    reference: str
    modality_types: Mapping[str, str]  # every modality: "mr" or "ct"
    label_values: tuple[int, ...] | None
    has_label: bool
    preprocess: Mapping[str, Any]  # the config's preprocess section (schema defaults filled)
    norm_methods: Mapping[str, str] = field(default_factory=dict)  # modality -> normalization method

    @classmethod
    def from_sections(cls, inp: Mapping[str, Any], preprocess: Mapping[str, Any], has_label: bool) -> ChainSettings:
        mods = tuple(inp["modalities"])
        types = inp.get("modality_types") or {}
        norm = preprocess["normalize"]
        return cls(modalities=mods, reference=inp.get("reference") or mods[0],
                   modality_types=_frozen({m: modality_type(types, m) for m in mods}),
                   label_values=tuple(inp["label_values"]) if inp.get("label_values") else None,
                   has_label=has_label, preprocess=preprocess,
                   norm_methods=_frozen({m: (norm.get("per_modality") or {}).get(m, norm["method"]) for m in mods}))

    @classmethod
    def from_json(cls, settings: Mapping[str, Any], has_label: bool = False) -> ChainSettings:
        """From a model's settings.json (to_json's sections); no label: a scan to predict has none."""
        return cls.from_sections(settings["input"], settings["preprocess"], has_label)

    def to_json(self) -> dict:
        """The sections a model's settings.json keeps (with the config's `infer`, added by the caller)."""
        return {"input": {"modalities": list(self.modalities), "reference": self.reference,
                          "modality_types": dict(self.modality_types),
                          "label_values": list(self.label_values) if self.label_values else None},
                "preprocess": self.preprocess}

    def is_ct(self, modality: str) -> bool:
        return is_ct_modality(self.modality_types, modality)

    @property
    def space(self) -> str:
        """Where the stores live: "mni" (registered to MNI152) or "native" (cropped and resampled)."""
        return str(self.preprocess["space"])

    @property
    def store_space(self) -> str:
        """The name of the stores' grid in outputs and tables: nothing native is called "mni"."""
        return "mni" if self.space == "mni" else "resampled"

    @property
    def space_step(self) -> str:
        """The step that writes the stores' grid: the MNI registration, or the native crop and resampling."""
        return "mni" if self.space == "mni" else "native"

    @property
    def denoise(self) -> bool:
        return bool(self.preprocess["denoise"]["enabled"])

    @property
    def ct_direct(self) -> bool:
        """Every modality CT, no skull stripping, native space: N4 would only copy the images and skull
        stripping 'none' would keep the whole field of view, so the chain goes from co-registration (or
        denoising) straight to the native-space crop."""
        return (self.space == "native" and self.preprocess["skullstrip"]["method"] == "none"
                and all(self.is_ct(m) for m in self.modalities))

    @property
    def dataset_norm(self) -> bool:
        """Some modality's normalization is learned over the cohort (model/normalization.json)."""
        return bool(set(self.norm_methods.values()) & DATASET_NORMALIZATIONS)


@dataclass(frozen=True)
class Settings:
    """A run's settings: the chain's, and the workflow's (how subjects run, what is trained and predicted)."""

    config: Mapping[str, Any]  # the validated config, for the sections passed through unchanged
    chain: ChainSettings
    output_dir: str
    subjects: tuple[str, ...]
    on_error: str  # "exclude": a failing subject is left out; "stop": the run stops
    fused: bool  # one job per subject (the whole chain), else one job per step
    predict_model_dir: str | None  # predict-only run: the trained model folder
    training: bool
    evaluate: bool
    folds: tuple[int, ...]
    train_processes: int  # DDP world size of a training job

    @classmethod
    def from_config(cls, config: Mapping[str, Any], cohort) -> Settings:
        from voxflow.settings.launch import train_processes

        inp, pre, split = config["input"], config["preprocess"], config["split"]
        has_label = inp["label"] is not None
        model_dir = config["predict"]["model_dir"] or None
        on_error = inp["on_error"]
        # One job per subject (the whole chain) or one per step. `auto`: per subject with on_error: exclude
        # (Snakemake runs nothing downstream of a failed job, so excluding a failing subject needs its chain
        # in one job that always ends with its status file), per step with stop (each step resumable on its
        # own). Never the cohort's size: a 10-subject test and a 10 000-subject run build the same graph.
        fused = pre["granularity"] == "subject" or (pre["granularity"] == "auto" and on_error == "exclude")
        folds = split["folds_to_train"] if split["folds_to_train"] is not None else list(range(split["n_folds"]))
        return cls(config=config, chain=ChainSettings.from_sections(inp, pre, has_label),
                   output_dir=str(config["output_dir"]), subjects=tuple(cohort.subjects), on_error=on_error,
                   fused=fused, predict_model_dir=model_dir, training=has_label and not model_dir,
                   evaluate=has_label and (bool(model_dir) or config["train"]["epochs"] > 0),
                   folds=tuple(int(k) for k in folds), train_processes=train_processes(config["train"]))

    # --- the config's sections and the workflow's decisions, as the rules read them ---------------------------------
    # A section is passed through as the config's very dict (its JSON is a step's params, which Snakemake's params
    # trigger compares: the same values give the same text); the rules never read the config itself.

    SECTIONS: ClassVar[tuple[str, ...]] = ("input", "demo", "preprocess", "qc", "dask", "split", "model", "train",
                                           "synthesis", "infer", "postprocess", "predict", "evaluate", "resources")

    def section(self, name: str) -> dict[str, Any]:
        """A section of the validated config (schema defaults filled), unchanged: what a step reads of it."""
        if name not in self.SECTIONS:
            raise KeyError(f"no config section {name!r}; sections: {', '.join(self.SECTIONS)}")
        return self.config[name]

    @property
    def layout(self) -> str:
        """input.layout: how the cohort is found (demo, folders, sheet, brats, msd, bids)."""
        return str(self.config["input"]["layout"])

    @property
    def dask_scheduler(self) -> str:
        """dask.scheduler, as the cohort steps receive it."""
        return self.config["dask"]["scheduler"]

    @property
    def exclude_flagged(self) -> bool:
        """qc.exclude_flagged: the split waits for the cohort QC and leaves the flagged subjects out of training."""
        return bool(self.config["qc"]["exclude_flagged"])

    @property
    def configurations(self) -> tuple[str, ...]:
        """The configurations trained side by side (model.configurations, 3d_cascade added by model.cascade),
        each in model/<configuration>/; () for model.dim alone, in model/."""
        model = self.config["model"]
        return tuple(dict.fromkeys(list(model["configurations"] or []) + (["3d_cascade"] if model["cascade"] else [])))

    @property
    def epochs(self) -> int:
        return self.config["train"]["epochs"]

    @property
    def writes_report(self) -> bool:
        """The run predicts (a model trained here or predict.model_dir) and ends with report/report.html."""
        return bool(self.predict_model_dir or (self.chain.has_label and self.epochs > 0))

    @property
    def exports_model(self) -> bool:
        """The run trains a model, and writes model/settings.json (what `voxflow export-model` packs with the folds)."""
        return bool(self.training and self.epochs > 0)

    @property
    def train_threads(self) -> int:
        return self.config["train"]["threads"]

    @property
    def train_gpus(self) -> int:
        """The `gpu` resource of a training job (the segmentation folds, the synthesis model): see launch.train_gpus."""
        from voxflow.settings.launch import train_gpus

        return train_gpus(self.config["train"])

    @property
    def predict_gpus(self) -> int:
        """The `gpu` resource of a prediction job: one GPU when train.gpu asks for GPUs."""
        return 1 if self.config["train"]["gpu"] else 0

    @property
    def synthesis_threads(self) -> int:
        return self.config["synthesis"]["threads"]

    @property
    def synthetic_modality_p(self) -> float:
        """train.augment.synthetic_modality_p (0 when unset): training replaces modalities by the synthesis model's."""
        return float((self.config["train"]["augment"] or {}).get("synthetic_modality_p") or 0.0)

    @property
    def predicts_every_subject(self) -> bool:
        """Every included subject is predicted (predict-only mode, or infer.subjects: all), else the test subjects."""
        return bool(self.predict_model_dir) or self.config["infer"]["subjects"] != "test"

    @property
    def writes_probabilities(self) -> bool:
        """infer.probabilities: a native-space foreground probability map beside each prediction."""
        return bool(self.config["infer"]["probabilities"])

    @property
    def eval_subjects_per_job(self) -> int:
        return self.config["evaluate"]["subjects_per_job"]

    def mem_mb(self, kind: str) -> int:
        """Memory (MB) of a job of `kind` (light, heavy), from the resources section (the rules double it per retry)."""
        return self.config["resources"][f"mem_mb_{kind}"]

    def runtime_min(self, kind: str) -> int:
        """Wall-time limit (minutes) of a job of `kind` (light, heavy, train, infer). A training fold's covers
        train.budget_minutes, with room for the predictions of its validation subjects."""
        import math

        base = self.config["resources"][f"runtime_min_{kind}"]
        budget = self.config["train"].get("budget_minutes")
        if kind == "train" and budget:
            base = max(base, int(math.ceil(budget * 1.25)) + 30)
        return base

    @property
    def model_dir(self) -> str:
        """The model the predictions use: the trained one of this run, or predict.model_dir."""
        from voxflow.core.layout import OutputLayout

        return self.predict_model_dir or OutputLayout(self.output_dir).model_dir

    @property
    def normalization_json(self) -> str | None:
        """model/normalization.json when some modality's normalization is learned over the cohort."""
        from voxflow.core.layout import ModelFolder

        return ModelFolder(self.model_dir).normalization if self.chain.dataset_norm else None

    @property
    def store_declared(self) -> bool:
        """Whether a rule declares the zarr store as its output. The fused job of the exclude mode cannot (a job
        must write every declared output, and an excluded subject has no store): there the status file stands
        for the store, and the steps that read a store resolve it (voxflow.core.stores.store_path)."""
        return not self.fused or self.chain.dataset_norm or self.on_error == "stop"
