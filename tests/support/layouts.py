"""Cohorts in the input layouts, as the tests write them: a config's cohort (voxflow.settings.build_cohort over
the schema's defaults), its one-line config error, sample sheets and DICOM series with identifying patient tags."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import SimpleITK as sitk

from support.paths import SCHEMA

PATIENT_NAME, PATIENT_ID = "Doe^Janeprivacy", "PID4711XQ"


def load_cohort(inp: dict, **top):
    from voxflow.settings import build_cohort, validate_config

    cfg = validate_config(copy.deepcopy({"input": inp, **top}), SCHEMA)
    return build_cohort(cfg), cfg


def config_error(inp: dict) -> str:
    from voxflow.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        load_cohort(inp)
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


def write_dicom_series(img: sitk.Image, folder: Path, series_uid: str, extra: dict | None = None) -> None:
    """One file per slice with the geometry tags ITK reads back, and identifying patient tags."""
    folder.mkdir(parents=True, exist_ok=True)
    img = sitk.Cast(img, sitk.sitkInt16)
    d = img.GetDirection()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(img.GetDepth()):
        sl = img[:, :, k]
        tags = {"0010|0010": PATIENT_NAME, "0010|0020": PATIENT_ID, "0008|0060": "MR",
                "0020|000d": "1.2.826.0.1.3680043.2.1125.7", "0020|000e": series_uid,
                "0008|0018": f"{series_uid}.{k + 1}", "0020|0013": str(k + 1),
                "0020|0032": "\\".join(f"{v:.6f}" for v in img.TransformIndexToPhysicalPoint((0, 0, k))),
                "0020|0037": "\\".join(f"{v:.6f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
                "0018|0050": f"{img.GetSpacing()[2]:.4f}", **(extra or {})}
        for key, value in tags.items():
            sl.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(sl)


def write_sheet(path: Path, rows: list[list[str]], sep: str = ",") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(sep.join(r) for r in rows) + "\n")
    return path
