"""Deterministic synthetic CT cohort: abdominal torso slabs in Hounsfield units with a liver and lesions.

A liver-CT cohort exercises what the brain demo cannot: negative intensities (air at -1000 HU), a
scanner table that must not count as body, a coarse slice axis (0.8 x 0.8 x 5 mm), and a body that
an MNI brain template cannot describe. Each subject: an elliptic body with a subcutaneous fat ring
(-100 HU) around soft tissue (40 HU), a vertebral body (cancellous 300, cortex 700 HU), an aorta
(150 HU), a liver (60 HU) with one or two hypodense lesions (20-30 HU), a curved table plate under
the body, a slice profile (three sub-slices averaged per 5 mm slice) and Gaussian noise.
Labels: 0 background, 1 liver, 2 lesion (the lesion replaces liver). Everything comes from
``numpy.random.default_rng([seed, index])``, so files are bit-identical across runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from voxflow.core.atomic import atomic_path
from voxflow.core.atomic import write_json_atomic

HU = {"air": -1000.0, "fat": -100.0, "soft": 40.0, "liver": 60.0, "bone": 700.0, "marrow": 300.0,
      "aorta": 150.0, "table": 100.0}
LABELS = {"liver": 1, "lesion": 2}


def _draw(rng: np.random.Generator, n_lesions: tuple[int, int]) -> dict:
    """Subject parameters in LPS millimetres (x left, y posterior, z superior), body centred near 0."""
    a, b = rng.uniform(135, 160), rng.uniform(92, 110)
    centre = rng.uniform(-8, 8, 2)
    liver_c = np.array([centre[0] - 0.42 * a, centre[1] - 0.12 * b, rng.uniform(-10, 10)])
    liver_r = np.array([rng.uniform(65, 80), rng.uniform(50, 62), rng.uniform(55, 75)])
    lesions = []
    for _ in range(int(rng.integers(n_lesions[0], n_lesions[1] + 1))):
        d = rng.normal(size=3)
        d *= rng.uniform(0.0, 0.45) / np.linalg.norm(d)  # centre well inside the liver (normalized radius)
        lesions.append({"centre_mm": (liver_c + d * liver_r).tolist(), "radius_mm": float(rng.uniform(8, 14)),
                        "hu": float(rng.uniform(20, 30))})
    return {"a": a, "b": b, "centre": centre.tolist(), "fat_mm": float(rng.uniform(12, 22)),
            "liver_centre": liver_c.tolist(), "liver_radii": liver_r.tolist(), "lesions": lesions,
            "wobble": rng.uniform(-1, 1, (3, 3)).tolist(), "noise_hu": float(rng.uniform(9, 14)),
            "offset_hu": float(rng.uniform(-4, 4))}


def _slab(p: dict, x: np.ndarray, y: np.ndarray, z: float) -> tuple[np.ndarray, np.ndarray]:
    """HU and labels of one axial plane at height z (x, y: 2D coordinate grids in mm)."""
    cx, cy = p["centre"]
    taper = 1.0 + 0.04 * z / 50.0  # the torso widens slightly upwards
    a, b = p["a"] * taper, p["b"] * taper
    r_body = ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2
    t = p["fat_mm"]
    r_inner = ((x - cx) / (a - t)) ** 2 + ((y - cy) / (b - t)) ** 2
    hu = np.full(x.shape, HU["air"], np.float32)
    hu[r_body <= 1] = HU["fat"]
    hu[r_inner <= 1] = HU["soft"]
    # table: a curved plate 8 mm thick, 15 mm below (posterior to) the body, wider than the body
    plate_y = cy + b + 15 + 0.002 * (x - cx) ** 2
    hu[(y >= plate_y) & (y <= plate_y + 8) & (np.abs(x - cx) < a + 20)] = HU["table"]
    spine = np.hypot(x - cx, y - (cy + b - t - 32))
    hu[spine <= 18] = HU["bone"]
    hu[spine <= 14] = HU["marrow"]
    hu[np.hypot(x - (cx + 22), y - (cy + b - t - 62)) <= 11] = HU["aorta"]
    lab = np.zeros(x.shape, np.uint8)
    lc, lr, w = np.array(p["liver_centre"]), np.array(p["liver_radii"]), np.array(p["wobble"])
    u, v, s = (x - lc[0]) / lr[0], (y - lc[1]) / lr[1], (z - lc[2]) / lr[2]
    theta = np.arctan2(v, u)
    bump = 1 + 0.08 * (w[0, 0] * np.sin(2 * theta + 3 * w[0, 1]) + w[1, 0] * np.sin(3 * theta + 3 * w[1, 1])
                       + w[2, 0] * np.sin(2.5 * s + w[2, 1]))
    liver = (u ** 2 + v ** 2 + s ** 2 <= bump ** 2) & (r_inner <= 1) & (spine > 22)
    hu[liver], lab[liver] = HU["liver"], LABELS["liver"]
    for les in p["lesions"]:
        c, r = les["centre_mm"], les["radius_mm"]
        inside = ((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2 <= r * r) & liver
        hu[inside], lab[inside] = les["hu"], LABELS["lesion"]
    return hu, lab


def _save(data: np.ndarray, affine: np.ndarray, path: Path) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    with atomic_path(path) as tmp:
        img.to_filename(str(tmp))


def generate_ct_subject(subject: str, index: int, root: str | Path, *, modality: str = "ct", seed: int = 42,
                        spacing: tuple[float, float, float] = (0.8, 0.8, 5.0),
                        fov_mm: tuple[float, float, float] = (380.0, 300.0, 100.0),
                        n_lesions: tuple[int, int] = (1, 2)) -> dict:
    """Write {root}/{subject}/{modality}.nii.gz (int16 HU) and {root}/{subject}/seg.nii.gz (uint8 0/1/2).

    The files are stored in RAS voxel order (as dcm2niix writes many CT series), so ingest has to
    reorient them. Returns the paths and the true liver/lesion volumes in ml (on the native grid).
    """
    sx, sy, sz = (float(s) for s in spacing)
    if min(spacing) <= 0:
        raise ValueError(f"spacing must be positive, got {spacing}")
    rng = np.random.default_rng([seed, index])
    p = _draw(rng, n_lesions)
    nx, ny, nz = (max(2, int(round(f / s))) for f, s in zip(fov_mm, (sx, sy, sz)))
    # LPS voxel centres, the field of view centred on 0
    xs = (np.arange(nx) - (nx - 1) / 2) * sx
    ys = (np.arange(ny) - (ny - 1) / 2) * sy
    zs = (np.arange(nz) - (nz - 1) / 2) * sz
    x, y = np.meshgrid(xs, ys, indexing="ij")
    hu = np.empty((nx, ny, nz), np.float32)
    lab = np.empty((nx, ny, nz), np.uint8)
    for k, z in enumerate(zs):
        # slice profile: the mean of three planes across the slab; the label is the central plane
        planes = [_slab(p, x, y, z + dz)[0] for dz in (-sz / 3, sz / 3)]
        centre, lab[:, :, k] = _slab(p, x, y, z)
        hu[:, :, k] = (planes[0] + planes[1] + centre) / 3
    hu += rng.normal(0.0, p["noise_hu"], hu.shape).astype(np.float32) + p["offset_hu"]
    data = np.clip(np.round(hu), -1024, 3071).astype(np.int16)
    # LPS array -> RAS voxel order: flip x and y; the affine maps voxel (i, j, k) to RAS mm
    data, lab = data[::-1, ::-1], lab[::-1, ::-1]
    affine = np.diag([sx, sy, sz, 1.0])
    affine[:3, 3] = [-xs[-1], -ys[-1], zs[0]]  # RAS of voxel 0 = -(LPS of the last x, y voxel)
    out = Path(root) / subject
    out.mkdir(parents=True, exist_ok=True)
    paths = {modality: out / f"{modality}.nii.gz", "seg": out / "seg.nii.gz"}
    _save(np.ascontiguousarray(data), affine, paths[modality])
    _save(np.ascontiguousarray(lab), affine, paths["seg"])
    voxel_ml = sx * sy * sz / 1000.0
    truth = {"subject": subject, "index": int(index), "seed": int(seed), "spacing_mm": [sx, sy, sz],
             "shape": [nx, ny, nz], "liver_ml": float((lab == 1).sum() * voxel_ml),
             "lesion_ml": float((lab == 2).sum() * voxel_ml), "params": p}
    return {"paths": {k: str(v) for k, v in paths.items()}, "truth": truth}


def generate_ct_cohort(root: str | Path, n_subjects: int = 3, **kwargs) -> list[dict]:
    """Subjects ct000, ct001, ...; keyword arguments go to `generate_ct_subject`."""
    out = [generate_ct_subject(f"ct{i:03d}", i, root, **kwargs) for i in range(n_subjects)]
    write_json_atomic([o["truth"] for o in out], Path(root) / "truth.json")
    return out
