"""The catalogue of config mistakes: one case per mistake, each a function of a temporary folder that returns
(config, the exact `voxflow ERROR [config]` lines), over a folders cohort of tiny synthetic NIfTI files (8x8x8);
and `voxflow validate` run in the test's process on a written config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from support.paths import PROJECT

BASE = str(PROJECT / "config" / "config.yaml")  # the Snakefile's configfile, as snakemake merges it
MODS = ["t1", "t2", "flair"]
RULE = "(allowed: letters, digits and _ . + - , not starting with . or -, at most 200 bytes)"
GOOD = ["s01", "s02", "s03", "s04", "s05"]


def _nifti(path: Path, label: bool = False) -> None:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.uint8 if label else np.float32), np.eye(4)), str(path))


def write_folders(root: Path, subjects, files=(*MODS, "seg")) -> Path:
    for s in subjects:
        for f in files:
            _nifti(root / s / f"{f}.nii.gz", label=f == "seg")
    return root


def folders_config(tmp: Path, **sections) -> dict:
    """A folders cohort under tmp/data (created with GOOD when absent), outputs in tmp/results, 2 folds."""
    if not (tmp / "data").exists():
        write_folders(tmp / "data", GOOD)
    cfg = {"output_dir": str(tmp / "results"), "input": {"layout": "folders", "root": str(tmp / "data")},
           "split": {"n_folds": 2, "folds_to_train": None, "test_fraction": 0.2}}
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


def write_config(tmp: Path, cfg) -> Path:
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    return path


def validate_lines(path: Path, capsys, *args: str) -> tuple[int, list[str]]:
    """`voxflow validate` in this process: exit code and its `voxflow ERROR [config]` lines (prefix removed)."""
    from voxflow.cli import main

    capsys.readouterr()
    rc = main(["validate", str(path), "--base-config", BASE, "--quiet", "--headers-only", "--jobs", "1", *args])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    prefix = "voxflow ERROR [config] "
    return rc, [ln[len(prefix):] for ln in err.splitlines() if ln.startswith(prefix)]


# --- the cases: name -> function(tmp) returning (config, expected lines) -----------------------------------------

def _ids_input_subjects(tmp):
    return (folders_config(tmp, input={"subjects": ["s01", "a b", "../x", "-rf"]}),
            [f"config error at 'input.subjects': 3 subject IDs cannot be used as file and job names: 'a b', '../x', "
             f"'-rf' {RULE}"])


def _ids_control_and_long(tmp):
    long = "a" * 201
    return (folders_config(tmp, input={"subjects": ["tab\there", "new\nline", "x{y}", long, "", ".."]}),
            [f"config error at 'input.subjects': 6 subject IDs cannot be used as file and job names: 'tab\\there', "
             f"'new\\nline', 'x{{y}}', '{'a' * 50}'..., '', '..' {RULE}"])


def _ids_duplicated(tmp):
    return (folders_config(tmp, input={"subjects": ["s01", "s02", "s01"]}),
            ["config error at 'input.subjects': duplicated subject IDs: ['s01']"])


def _ids_folders(tmp):
    root = write_folders(tmp / "data", GOOD + ["a b", "{x}", "-rf", "it's", "back\\slash"])
    write_folders(root, [".hidden"])  # hidden folders are not subjects
    return (folders_config(tmp),
            [f"config error at 'input.root': 5 subject folder names in {root} cannot be used as file and "
             f"job names: '-rf', 'a b', 'back\\\\slash', \"it's\", '{{x}}' {RULE}"])


def _ids_sheet(tmp):
    data = write_folders(tmp / "data", GOOD[:2])
    sheet = data / "cohort.csv"
    rows = ["subject,t1,t2,flair,seg"] + [f"{s},{s}/t1.nii.gz,{s}/t2.nii.gz,{s}/flair.nii.gz,{s}/seg.nii.gz"
                                          for s in GOOD[:2]]
    rows += ["a b,x/t1.nii.gz,,,", ",y/t1.nii.gz,,,", "../up,z/t1.nii.gz,,,", "a b,w/t1.nii.gz,,,"]
    sheet.write_text("\n".join(rows) + "\n")
    return (folders_config(tmp, input={"layout": "sheet", "sheet": str(sheet), "root": None}),
            [f"config error at 'input.sheet': 3 subject IDs in {sheet} cannot be used as file and job names: "
             f"'a b' (line 4), '' (line 5), '../up' (line 6) {RULE}"])


def _ids_brats(tmp):
    root = tmp / "brats"
    for s in ["BraTS-001", "BraTS 002"]:
        _nifti(root / s / f"{s}_t1.nii.gz")
    return (folders_config(tmp, input={"layout": "brats", "root": str(root), "modalities": ["t1"], "label": None}),
            [f"config error at 'input.root': 1 subject folder name in {root} cannot be used as file and job names: "
             f"'BraTS 002' {RULE}"])


def _ids_msd(tmp):
    root = tmp / "msd"
    (root / "imagesTr").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T1"}, "labels": {"background": 0, "a": 1}}))
    for case in ["case_001", "case 002", "-case3"]:
        _nifti(root / "imagesTr" / f"{case}_0000.nii.gz")
    return (folders_config(tmp, input={"layout": "msd", "root": str(root), "modalities": ["t1"], "label": None}),
            [f"config error at 'input.root': 2 subject IDs from the file names in {root / 'imagesTr'} cannot be "
             f"used as file and job names: '-case3', 'case 002' {RULE}"])


def _ids_bids(tmp):
    root = tmp / "bids"
    for sub in ["sub-01", "sub-0 2"]:
        _nifti(root / sub / "anat" / f"{sub}_T1w.nii.gz")
    return (folders_config(tmp, input={"layout": "bids", "root": str(root), "modalities": ["T1w"], "label": None}),
            [f"config error at 'input.root': 1 subject ID from the sub-*/ses-* folder names in {root} cannot be used "
             f"as file and job names: 'sub-0 2' {RULE}"])


def _test_subjects_missing(tmp):
    return (folders_config(tmp, split={"test_subjects": ["s01", "nope", "gone"]}),
            ["config error at 'split.test_subjects': 2 subjects are not in the cohort: 'nope', 'gone'"])


def _test_subjects_twice(tmp):
    return (folders_config(tmp, split={"test_subjects": ["s01", "s01"]}),
            ["config error at 'split.test_subjects': listed more than once: 's01'"])


def _folds_out_of_range(tmp):
    return (folders_config(tmp, split={"folds_to_train": [0, 2, 5]}),
            ["config error at 'split.folds_to_train': folds 2, 5 do not exist: split.n_folds 2 makes folds 0-1"])


def _folds_twice(tmp):
    return (folders_config(tmp, split={"folds_to_train": [1, 0, 1]}),
            ["config error at 'split.folds_to_train': fold 1 listed more than once"])


def _folds_empty(tmp):
    return (folders_config(tmp, split={"folds_to_train": []}),
            ["config error at 'split.folds_to_train': [] trains no fold; null = every fold"])


def _all_test_subjects(tmp):
    return (folders_config(tmp, split={"test_subjects": GOOD}),
            ["config error at 'split.test_subjects': every subject of the cohort (5) is a test subject: none is left "
             "for training"])


def _test_fraction_leaves_none(tmp):
    write_folders(tmp / "data", ["only"])
    return (folders_config(tmp, split={"n_folds": 1, "test_fraction": 0.9}),
            ["config error at 'split.test_fraction': 0.9 of 1 subject makes 1 test subject: none is left for training"])


def _fewer_training_than_folds(tmp):
    return (folders_config(tmp, split={"n_folds": 5}),
            ["config error at 'split': 4 training subjects cannot make 5 folds (lower split.n_folds or "
             "split.test_fraction)"])


def _output_inside_root(tmp):
    cfg = folders_config(tmp, output_dir=str(tmp / "data" / "results"))
    return (cfg, [f"config error at 'output_dir': '{tmp / 'data' / 'results'}' is inside the input root "
                  f"'{tmp / 'data'}' (input.root): outputs would mix with the input data; choose an output_dir "
                  "outside it"])


def _output_is_root(tmp):
    return (folders_config(tmp, output_dir=str(tmp / "data")),
            [f"config error at 'output_dir': '{tmp / 'data'}' is the input root (input.root): outputs would mix with "
             "the input data; choose an output_dir outside it"])


def _output_inside_sheet_folder(tmp):
    data = write_folders(tmp / "data", GOOD[:3])
    sheet = data / "cohort.csv"
    sheet.write_text("subject,t1,t2,flair,seg\n" + "".join(
        f"{s},{s}/t1.nii.gz,{s}/t2.nii.gz,{s}/flair.nii.gz,{s}/seg.nii.gz\n" for s in GOOD[:3]))
    out = str(data)  # results beside the sheet (data/results) are fine: it names its subjects, nothing is scanned
    return (folders_config(tmp, output_dir=out, input={"layout": "sheet", "sheet": str(sheet), "root": None}),
            [f"config error at 'output_dir': '{out}' is the input root (the folder of input.sheet): "
             "outputs would mix with the input data; choose an output_dir outside it"])


def _root_inside_written_output(tmp):
    root = write_folders(tmp / "results" / "zarr" / "raw", GOOD)
    return (folders_config(tmp, input={"root": str(root)}),
            [f"config error at 'input.root': the input root '{root}' is inside '{tmp / 'results' / 'zarr'}', a folder "
             "the workflow writes; move the data or choose another output_dir"])


def _modality_twice(tmp):
    return (folders_config(tmp, input={"modalities": ["t1", "t1"]}),
            ["config error at 'input.modalities': ['t1', 't1'] has non-unique elements"])


def _unknown_modality_keys(tmp):
    return (folders_config(tmp, input={"modality_types": {"pet": "ct", "t1": "mr"}, "file_names": {"T2": "t2w.nii.gz"}},
                           preprocess={"normalize": {"per_modality": {"ct": "ct_window"}},
                                       "denoise": {"modalities": ["t1", "dwi", "adc"]},
                                       "skullstrip": {"modality": "T1"}}),
            ["config error at 'input.modality_types': unknown modality 'pet'; input.modalities: ['t1', 't2', 'flair']",
             "config error at 'input.file_names': unknown modality 'T2'; input.modalities: ['t1', 't2', 'flair']",
             "config error at 'preprocess.normalize.per_modality': unknown modality 'ct'; input.modalities: "
             "['t1', 't2', 'flair']",
             "config error at 'preprocess.denoise.modalities': unknown modalities 'dwi', 'adc'; input.modalities: "
             "['t1', 't2', 'flair']",
             "config error at 'preprocess.skullstrip.modality': unknown modality 'T1'; input.modalities: "
             "['t1', 't2', 'flair']"])


def _file_names_other_layout(tmp):
    cfg, _ = _ids_brats(tmp)
    (tmp / "brats" / "BraTS 002").rename(tmp / "brats" / "BraTS-002")
    (tmp / "brats" / "BraTS-002" / "BraTS 002_t1.nii.gz").rename(tmp / "brats" / "BraTS-002" / "BraTS-002_t1.nii.gz")
    cfg["input"].update(file_names={"t1": "T1.nii.gz"}, label_file="mask.nii.gz")
    return (cfg, ["config error at 'input.file_names': only the folders layout reads it (input.layout is 'brats'); "
                  "remove it",
                  "config error at 'input.label_file': only the folders layout reads it (input.layout is 'brats'); "
                  "remove it"])


def _label_values_without_zero(tmp):
    return (folders_config(tmp, input={"label_values": [1, 2, 4]}),
            ["config error at 'input.label_values': [1, 2, 4] lacks 0, the background every label map holds"])


def _label_values_twice(tmp):
    return (folders_config(tmp, input={"label_values": [0, 1, 1, 2]}),
            ["config error at 'input.label_values': [0, 1, 1, 2] lists 1 more than once"])


def _label_values_background_only(tmp):
    return (folders_config(tmp, input={"label_values": [0]}),
            ["config error at 'input.label_values': [0] has no foreground label"])


def _evaluate_labels_unknown(tmp):
    return (folders_config(tmp, evaluate={"labels": [1, 3]}),
            ["config error at 'evaluate.labels': 3 is not in input.label_values [0, 1, 2, 4]"])


def _model_dir(tmp, files=("plans.json", "postprocessing.json", "fold_0/model_final.pt"), modalities=MODS) -> Path:
    model = tmp / "model"
    for name in files:
        (model / name).parent.mkdir(parents=True, exist_ok=True)
        (model / name).write_text(json.dumps({"modalities": modalities}) if name == "plans.json" else "{}")
    return model


def _model_dir_missing(tmp):
    return (folders_config(tmp, input={"label": None}, predict={"model_dir": str(tmp / "nomodel")}),
            [f"config error at 'predict.model_dir': '{tmp / 'nomodel'}' is not a directory"])


def _model_dir_incomplete(tmp):
    model = _model_dir(tmp, files=("plans.json",))
    return (folders_config(tmp, input={"label": None}, predict={"model_dir": str(model)}),
            [f"config error at 'predict.model_dir': '{model}' lacks postprocessing.json, fold_<k>/model_final.pt: not "
             "the model folder of a finished training run (output_dir/model)"])


def _model_dir_other_modalities(tmp):
    model = _model_dir(tmp, modalities=["t1", "t2"])
    return (folders_config(tmp, input={"label": None}, predict={"model_dir": str(model)}),
            [f"config error at 'input.modalities': ['t1', 't2', 'flair'], but the model in '{model}' was trained on "
             "['t1', 't2'] (plans.json): give the same modalities in the same order"])


def _model_dir_no_normalization(tmp):
    model = _model_dir(tmp)
    return (folders_config(tmp, input={"label": None}, predict={"model_dir": str(model)},
                           preprocess={"normalize": {"method": "nyul"}}),
            [f"config error at 'predict.model_dir': '{model}' lacks normalization.json (normalization ['nyul']): not "
             "the model folder of a finished training run (output_dir/model)"])


def _context_slices_even(tmp):
    return (folders_config(tmp, model={"dim": "2.5d", "context_slices": 4}),
            ["config error at 'model.context_slices': 4 with model.dim 2.5d; use an odd number (the network predicts "
             "the centre slice)"])


def _processes_vs_gpus(tmp):
    return (folders_config(tmp, train={"gpus": 2, "processes": 3}),
            ["config error at 'train.processes': 3 processes but train.gpus is 2; training runs one process per GPU, "
             "set only one of them"])


def _batch_vs_processes(tmp):
    return (folders_config(tmp, train={"device": "cpu", "processes": 2}, model={"batch_size": 3}),
            ["config error at 'model.batch_size': 3 cannot be split over 2 training processes (train.gpus / "
             "train.processes); use a multiple of 2"])


def _synthesis_batch_and_unusable(tmp):
    """The synthesis model trains on the segmentation's DDP processes; input.unusable names known subjects."""
    return (folders_config(tmp, train={"device": "cpu", "processes": 2, "augment": {"synthetic_modality_p": 0.2}},
                           model={"batch_size": 2}, synthesis={"batch_size": 3},
                           input={"unusable": {"nobody": ["t1"]}}),
            ["config error at 'input.unusable': 'nobody' not in the cohort",
             "config error at 'synthesis.batch_size': 3 does not split over the 2 training processes (train.gpus / "
             "train.processes); use a multiple of 2"])


def _open_close_bad(tmp):
    return (folders_config(tmp, postprocess={"open_close": {"labels": [1], "op": "erode"}}),
            ["config error at 'postprocess.open_close': {'labels': [1], 'op': 'erode'}; expected {labels: [..], "
             "radius_vox: 1, op: open|close}"])


def _regions_ambiguous(tmp):
    """BraTS 2013 labels: the core [1, 3, 4] adds two labels to enhancing [4], so what it paints must be given."""
    return (folders_config(tmp, input={"label_values": [0, 1, 2, 3, 4]},
                           train={"regions": [[1, 2, 3, 4], [1, 3, 4], [4]]}),
            ["config error at 'train.regions': train.regions[1] [1, 3, 4] adds labels [1, 3] to the regions after "
             "it, so the label it paints at inference is ambiguous: set train.region_labels (one label per region, "
             "e.g. [2, 1, 4])"])


def _regions_unknown_label_and_wce(tmp):
    return (folders_config(tmp, train={"regions": [[1, 2, 3]], "loss": "wce"}),
            ["config error at 'train.regions': train.regions[0] [1, 2, 3]: labels [3] not among the foreground "
             "label values [1, 2, 4]",
             "config error at 'train.loss': wce (class-weighted softmax CE) has no region form; use dice_ce (Dice + "
             "BCE per region) with train.regions"])


def _deepbet_on_ct(tmp):
    return (folders_config(tmp, input={"modalities": ["t1"], "modality_types": {"t1": "ct"}}),
            ["config error at 'preprocess.skullstrip.method': deepbet is an MR brain extractor and 't1' is CT; use "
             "none (body CT) or template"])


def _template_without_files(tmp):
    return (folders_config(tmp, preprocess={"skullstrip": {"method": "template",
                                                           "template": {"brain_mask": str(tmp / "mask.nii.gz")}}}),
            ["config error at 'preprocess.skullstrip.template.head': method 'template' needs the whole-head template "
             "image",
             f"config error at 'preprocess.skullstrip.template.brain_mask': '{tmp / 'mask.nii.gz'}' is not a file"])


def _normalization_ranges(tmp):
    return (folders_config(tmp, preprocess={"normalize": {"method": "percentile", "percentiles": [99, 1],
                                                          "per_modality": {"t2": "nyul", "flair": "ct_window"},
                                                          "window": [100, -100],
                                                          "nyul": {"percentiles": [1, 50, 50, 99], "scale": [1, 0]}}}),
            ["config error at 'preprocess.normalize.percentiles': [99, 1]; give [low, high], low < high",
             "config error at 'preprocess.normalize.window': [100, -100]; give [low, high] in HU, low < high",
             "config error at 'preprocess.normalize.nyul.percentiles': [1, 50, 50, 99]; landmarks must increase",
             "config error at 'preprocess.normalize.nyul.scale': [1, 0]; give [low, high], low < high"])


def _step_granularity_with_exclude(tmp):
    return (folders_config(tmp, input={"on_error": "exclude"}, preprocess={"granularity": "step"}),
            ["config error at 'preprocess.granularity': 'step' needs input.on_error: stop (a subject is excluded on "
             "error only when its chain runs as one job); use 'auto' or 'subject'"])


def _epochs_zero(tmp):
    return (folders_config(tmp, train={"epochs": 0}),
            ["config error at 'train.epochs': 0 is less than the minimum of 1"])


def _several_at_once(tmp):
    return (folders_config(tmp, input={"label_values": [1, 2]}, split={"test_subjects": ["zz"], "folds_to_train": [3]}),
            ["config error at 'input.label_values': [1, 2] lacks 0, the background every label map holds",
             "config error at 'split.folds_to_train': fold 3 does not exist: split.n_folds 2 makes folds 0-1",
             "config error at 'split.test_subjects': 1 subject is not in the cohort: 'zz'"])


def _output_dir_empty(tmp):
    return folders_config(tmp, output_dir=""), [
        "config error at 'output_dir': empty; give the folder the results go to (e.g. results)"]


def _patch_size_vs_configurations(tmp):
    """One model.patch_size for a 2D and a 3D configuration cannot fit both (it applies to every configuration)."""
    return (folders_config(tmp, model={"configurations": ["2d", "3d"], "patch_size": [32, 32, 32]}),
            ["config error at 'model.patch_size': [32, 32, 32] has 3 values but configuration 2d needs 2 (2D/2.5D: "
             "[y, x], 3D: [z, y, x]); with several configurations leave it null (each plans its own)"])


def _extension_without_dot(tmp):
    return (folders_config(tmp, input={"modalities": ["t1"], "label": None, "extension": "nii.gz"}),
            ["config error at 'input.extension': 'nii.gz' does not start with '.': the files would be named like "
             "t1nii.gz; use '.nii.gz'",
             f"config error at 'input.modalities': no file for 't1' in any of the first 5 subjects (e.g. "
             f"{tmp / 'data' / 's01' / 't1nii.gz'}; {tmp / 'data' / 's01'} holds flair.nii.gz, seg.nii.gz, "
             "t1.nii.gz, t2.nii.gz): check input.modalities, input.label, input.extension and input.file_names"])


def _modality_in_no_subject(tmp):
    """A case mistake (T1 for t1): every subject would be excluded after its validation; said at load instead."""
    return (folders_config(tmp, input={"modalities": ["T1", "t2"], "label": "seg"}),
            [f"config error at 'input.modalities': no file for 'T1' in any of the first 5 subjects (e.g. "
             f"{tmp / 'data' / 's01' / 'T1.nii.gz'}; {tmp / 'data' / 's01'} holds flair.nii.gz, seg.nii.gz, "
             "t1.nii.gz, t2.nii.gz): check input.modalities, input.label, input.extension and input.file_names"])


CASES = {f.__name__[1:]: f for f in [
    _output_dir_empty, _extension_without_dot, _modality_in_no_subject,
    _ids_input_subjects, _ids_control_and_long, _ids_duplicated, _ids_folders, _ids_sheet, _ids_brats, _ids_msd,
    _ids_bids, _test_subjects_missing, _test_subjects_twice, _folds_out_of_range, _folds_twice, _folds_empty,
    _all_test_subjects, _test_fraction_leaves_none, _fewer_training_than_folds,
    _output_inside_root, _output_is_root, _output_inside_sheet_folder, _root_inside_written_output, _modality_twice,
    _unknown_modality_keys, _file_names_other_layout, _label_values_without_zero, _label_values_twice,
    _label_values_background_only, _evaluate_labels_unknown, _model_dir_missing, _model_dir_incomplete,
    _model_dir_other_modalities, _model_dir_no_normalization, _context_slices_even, _processes_vs_gpus,
    _batch_vs_processes, _patch_size_vs_configurations, _synthesis_batch_and_unusable, _open_close_bad,
    _regions_ambiguous,
    _regions_unknown_label_and_wce, _deepbet_on_ct, _template_without_files, _normalization_ranges,
    _step_granularity_with_exclude, _epochs_zero, _several_at_once]}
