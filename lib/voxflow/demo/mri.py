"""Deterministic synthetic "demo cohort": raw-looking clinical head MRIs built from nilearn's MNI152 2009 template.

The shipped template is skull-stripped, so a bare brain would make N4, deep-learning skull stripping and
registration trivial. Each subject therefore gets a synthetic head (extra-cerebral CSF, skull with marrow,
scalp), one to three BraTS-like lesions, a smooth non-linear deformation plus a rigid pose, per-modality
anisotropic grids with a slice profile, patient motion between sequences, a bias field and Rician noise.
Everything is drawn from ``numpy.random.default_rng([seed, index])`` so files are bit-identical across runs.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi
from scipy.spatial.transform import Rotation

from voxflow.demo.faults import ARRAY_FAULTS, FAR_ROTATION_DEG, FAULTS, apply_fault
from voxflow.core.atomic import atomic_path, write_json_atomic
from voxflow.core.layout import demo_files

MODALITIES = ("t1", "t1c", "t2", "flair")
SPACING = {"t1": (1.0, 1.0, 1.5), "t1c": (1.0, 1.0, 1.5), "t2": (1.0, 1.0, 3.0), "flair": (3.0, 1.0, 1.0)}
# Grid of the smooth random fields, fixed in mm (the MNI152 box plus 25 mm): same anatomy at every spacing_scale
COARSE_MM, COARSE_ORIGIN, COARSE_SHAPE = 4.0, np.array([-124.0, -160.0, -100.0], np.float32), (64, 74, 62)
STEP = 4  # native voxels between exactly computed sampling coordinates
HEAD_MM = 18.0  # outer limit of the head model (max csf + skull + scalp + ramp)
# Relative signal per tissue (WM of T1 = 1). Lesion: core (necrosis), rim (enhancing), edema.
CONTRAST = {
    "t1": dict(wm=1.0, gm=0.65, csf=0.2, bone=0.04, marrow=0.3, scalp=1.05, core=0.15, rim=0.65, edema=0.75),
    "t1c": dict(wm=1.0, gm=0.65, csf=0.2, bone=0.04, marrow=0.3, scalp=1.05, core=0.15, rim=1.6, edema=0.75),
    "t2": dict(wm=0.45, gm=0.6, csf=1.0, bone=0.04, marrow=0.2, scalp=0.7, core=1.0, rim=0.75, edema=0.9),
    "flair": dict(wm=0.5, gm=0.7, csf=0.1, bone=0.04, marrow=0.2, scalp=0.6, core=0.65, rim=0.85, edema=1.2),
}


@functools.lru_cache(maxsize=1)
def _mni() -> dict:
    """nilearn's 1 mm MNI152 2009 brain mask and GM/WM maps, plus lesion candidate centres (mm).

    Only the 1 mm files are read: nilearn's resolution=2 resamples on every call, a block mean is faster.
    Candidates (deep, supratentorial white matter) come from a 2 mm subsample so that every spacing_scale
    places the lesions identically.
    """
    from nilearn import datasets

    mask = datasets.load_mni152_brain_mask(resolution=1)
    brain, affine = np.asarray(mask.get_fdata()) > 0, mask.affine
    gm, wm = (np.asarray(f(resolution=1).get_fdata(), np.float32) * brain
              for f in (datasets.load_mni152_gm_template, datasets.load_mni152_wm_template))
    tot = np.maximum(gm + wm, 1.0)
    b2, w2 = brain[::2, ::2, ::2], (wm / tot)[::2, ::2, ::2]
    z = np.arange(b2.shape[2]) * 2 + affine[2, 3]
    ok = (w2 > 0.7) & (ndi.distance_transform_edt(b2, sampling=2) >= 22) & (z > -20)
    return dict(brain=brain.astype(np.float32), gm=gm / tot, wm=wm / tot, affine=affine,
                candidates=np.argwhere(ok) * 2.0 + affine[:3, 3])


@functools.lru_cache(maxsize=2)
def _template(res: int) -> dict:
    """Tissue fractions at `res` mm on a grid cropped to the head, and the flat indices of the head voxels.

    Cached per process: the distance transform dominates a cold start.
    """
    mni = _mni()
    m = int(np.ceil((HEAD_MM + 2) / res)) + 1  # margin (voxels) around the brain for the extra-cerebral layers
    pad = res * (m + 1)

    def prep(a):  # pad, then block-average to `res`
        a = np.pad(a, [(pad, pad + (-(s + 2 * pad)) % res) for s in a.shape])
        return a.reshape(a.shape[0] // res, res, a.shape[1] // res, res, a.shape[2] // res, res).mean((1, 3, 5))

    frac, gm, wm = (prep(mni[k]) for k in ("brain", "gm", "wm"))
    box = tuple(slice(b.start - m, b.stop + m) for b in ndi.find_objects((frac >= 0.5).astype(np.uint8))[0])
    frac, gm, wm = (np.ascontiguousarray(a[box], np.float32) for a in (frac, gm, wm))
    affine = np.diag([res, res, res, 1.0])
    affine[:3, 3] = mni["affine"][:3, 3] - pad + (res - 1) / 2 + np.array([b.start for b in box]) * res
    brain = frac >= 0.5
    dist_out = ndi.distance_transform_edt(~brain, sampling=res).astype(np.float32)
    head = np.flatnonzero(dist_out <= HEAD_MM)
    ijk = np.unravel_index(head, brain.shape)
    world = np.stack(ijk).astype(np.float32) * res + affine[:3, 3:4].astype(np.float32)
    out = dict(res=res, shape=brain.shape, affine=affine, brain=frac, head=head, frac=frac.ravel()[head],
               gm=gm.ravel()[head], wm=wm.ravel()[head],
               csf=np.clip(frac.ravel()[head] - gm.ravel()[head] - wm.ravel()[head], 0, 1),
               d=np.maximum(dist_out.ravel()[head] - res / 2, 0),  # mm beyond the brain surface
               coarse=(world - COARSE_ORIGIN[:, None]) / np.float32(COARSE_MM),
               brain_box=tuple(slice(b.start - 1, b.stop + 1) for b in ndi.find_objects(brain.astype(np.uint8))[0]),
               head_box=np.stack([world.min(1), world.max(1)], 1))
    for v in out.values():
        if isinstance(v, np.ndarray):
            v.flags.writeable = False
    return out


def _smooth_noise(rng, sigma_mm: float, n: int = 1) -> np.ndarray:
    """`n` smooth Gaussian random fields on the coarse grid, each with unit standard deviation."""
    f = rng.standard_normal((n, *COARSE_SHAPE), dtype=np.float32)
    for k in range(n):
        f[k] = ndi.gaussian_filter(f[k], sigma_mm / COARSE_MM, mode="reflect")
        f[k] /= f[k].std()
    return f


def _ramp(x, width):
    """Partial-volume fraction of a boundary at signed distance x (mm, > 0 = inside)."""
    return np.clip(0.5 + x / width, 0.0, 1.0)


def _rot(deg) -> np.ndarray:
    return Rotation.from_euler("xyz", deg, degrees=True).as_matrix()


def _draw_subject(rng, n_lesions) -> dict:
    """All random subject parameters, in a fixed order independent of modalities and spacing."""
    p = dict(rotation_deg=rng.uniform(-10, 10, 3), translation_mm=rng.uniform(-10, 10, 3),
             disp_amp_mm=rng.uniform(2, 4), disp_sigma_mm=rng.uniform(15, 20))
    p["disp"] = _smooth_noise(rng, p["disp_sigma_mm"], 3)
    p["disp"] *= p["disp_amp_mm"] / np.percentile(np.sqrt((p["disp"] ** 2).sum(0)), 95)
    p["thick"] = _smooth_noise(rng, 20.0, 3)  # csf, skull, scalp thickness modulation
    p["texture"] = _smooth_noise(rng, 3.0, 1)[0]
    p["mod_seeds"] = rng.integers(0, 2**63, size=len(MODALITIES))
    cand = _mni()["candidates"]
    lesions: list[dict] = []
    for _ in range(int(rng.integers(n_lesions[0], n_lesions[1] + 1))):
        far = np.ones(len(cand), bool)  # keep lesions apart when possible
        for les in lesions:
            far &= np.linalg.norm(cand - les["centre_mni_mm"], axis=1) > 35
        pool = cand[far] if far.any() else cand
        c = pool[int(rng.integers(len(pool)))] + rng.uniform(-1, 1, 3)
        lesions.append(dict(centre_mni_mm=c, r_core_mm=rng.uniform(4, 8), r_rim_mm=rng.uniform(2, 3),
                            r_edema_mm=rng.uniform(6, 15), seed=int(rng.integers(2**63))))
    p["lesions"] = lesions
    return p


def _lesion_fields(t: dict, lesions: list) -> tuple:
    """Soft nested masks (whole tumour >= tumour core >= necrosis) on a box of the template grid.

    Irregular shapes: radial distance plus smooth noise; edema gets its own, smoother noise and stays in the brain.
    """
    res, aff = t["res"], t["affine"]
    if not lesions:
        return (slice(0, 0),) * 3, None
    lo, hi = np.full(3, 10**6), np.zeros(3, int)
    boxes = []
    for les in lesions:
        r = les["r_core_mm"] + les["r_rim_mm"] + les["r_edema_mm"]
        c = (les["centre_mni_mm"] - aff[:3, 3]) / res
        b0 = np.maximum(np.floor(c - 1.6 * r / res).astype(int), 0)
        b1 = np.minimum(np.ceil(c + 1.6 * r / res).astype(int) + 1, t["shape"])
        boxes.append((b0, b1, c))
        lo, hi = np.minimum(lo, b0), np.maximum(hi, b1)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    f = np.zeros((3, *(hi - lo)), np.float32)
    brain = t["brain"][box]
    for les, (b0, b1, c) in zip(lesions, boxes):
        rng = np.random.default_rng(les["seed"])
        shape = tuple(b1 - b0)
        n = [ndi.gaussian_filter(rng.standard_normal(shape), s / res) for s in (3.0, 6.0)]
        n = [x / x.std() for x in n]
        g = np.ogrid[tuple(slice(a, b) for a, b in zip(b0, b1))]
        r = np.sqrt(sum(((gi - ci) * res) ** 2 for gi, ci in zip(g, c)))
        r_tc = les["r_core_mm"] + les["r_rim_mm"]
        r_wt = r_tc + les["r_edema_mm"]
        rc = r + 0.15 * r_tc * n[0]  # bumpy sphere: radial distance plus smooth noise proportional to size
        core = _ramp(les["r_core_mm"] - rc, 1.0)
        tc = np.maximum(_ramp(r_tc - rc, 1.0), core)
        wt = np.maximum(_ramp(r_wt - r - 0.2 * r_wt * n[1], 2.0), tc)
        sub = tuple(slice(a - o, b - o) for a, b, o in zip(b0, b1, lo))
        for k, x in enumerate((wt, tc, core)):
            f[k][sub] = np.maximum(f[k][sub], x * brain[sub])
    return box, f


def _head_fractions(t: dict, p: dict) -> dict:
    """Tissue fractions on the head voxels: brain from the template, extra-cerebral layers from the
    distance to the brain, with thicknesses modulated by smooth noise (partial volume via linear ramps)."""
    w, shell = float(t["res"]), np.flatnonzero(t["d"] > 0)  # layers live outside the brain only
    d, coarse = t["d"][shell], t["coarse"][:, shell]
    thick = [ndi.map_coordinates(f, coarse, order=1, mode="nearest", output=np.float32) for f in p["thick"]]
    b1 = 2.0 * (1 + 0.2 * np.tanh(thick[0]))  # csf / meninges
    skull = 5.5 + 1.5 * np.tanh(thick[1])
    b2 = b1 + skull
    b3 = b2 + 5.5 + 1.5 * np.tanh(thick[2])  # scalp
    fr = dict(csf=_ramp(b1 - d, w), marrow=_ramp(b1 + 0.65 * skull - d, w) - _ramp(b1 + 0.3 * skull - d, w))
    fr["bone"] = (_ramp(b2 - d, w) - fr["csf"] - fr["marrow"]).clip(0, 1)
    fr["scalp"] = _ramp(b3 - d, w) - _ramp(b2 - d, w)
    out = dict(wm=t["wm"], gm=t["gm"], csf=t["csf"].copy())
    for k, v in fr.items():  # layers fill what the brain leaves of the voxel
        out[k] = out[k] if k in out else np.zeros_like(t["d"])
        out[k][shell] += v * (1 - t["frac"][shell])
    tex = ndi.map_coordinates(p["texture"], t["coarse"], order=1, mode="nearest", output=np.float32)
    out["texture"] = 1 + (0.03 + 0.07 * out["scalp"]) * tex
    return out


def _head_image(t: dict, fr: dict, mod: str, box, les) -> np.ndarray:
    """Template-space image of the whole head for one contrast (on the cropped template grid)."""
    c = CONTRAST[mod]
    v = sum(fr[k] * np.float32(c[k]) for k in ("wm", "gm", "csf", "bone", "marrow", "scalp")) * fr["texture"]
    img = np.zeros(t["shape"], np.float32)
    img.ravel()[t["head"]] = v
    if les is not None:
        wt, tc, core = les
        img[box] = ((1 - wt) * img[box] + (wt - tc) * c["edema"] + (tc - core) * c["rim"] + core * c["core"])
    return img


def _upsample(a: np.ndarray, step: int, shape: tuple) -> np.ndarray:
    """Separable linear interpolation of `a` (sampled every `step` voxels) onto the full grid `shape`."""
    for ax, n in enumerate(shape):
        x = np.arange(n, dtype=np.float32) / step
        i0 = np.minimum(x.astype(int), a.shape[ax] - 2)
        w = (x - i0).reshape([-1 if k == ax else 1 for k in range(a.ndim)])
        d = np.take(np.diff(a, axis=ax), i0, axis=ax)
        d *= w
        a = np.take(a, i0, axis=ax)
        a += d
    return a


def _sample_box(a: np.ndarray, idx: np.ndarray, start) -> np.ndarray:
    """Linear sampling of a sub-array placed at template voxel `start`; 0 outside (skips far points cheaply)."""
    inside = np.ones(idx.shape[1], bool)
    for k, (s0, n) in enumerate(zip(start, a.shape)):
        inside &= (idx[k] >= s0) & (idx[k] <= s0 + n - 1)
    sel = np.flatnonzero(inside)
    out = np.zeros(idx.shape[1], np.float32)
    out[sel] = ndi.map_coordinates(a, idx[:, sel] - np.asarray(start, np.float32)[:, None], order=1,
                                   mode="nearest", output=np.float32)
    return out


def _bias_field(rng, shape) -> np.ndarray:
    """Smooth multiplicative coil sensitivity: exp of a random quadratic, mapped to 0.7..1.4 over the head."""
    cs = tuple(-(-(n - 1) // STEP) + 1 for n in shape)
    u = [(np.arange(c, dtype=np.float32) * STEP / max(n - 1, 1) * 2 - 1).reshape([-1 if k == ax else 1
                                                                                    for k in range(3)])
         for ax, (c, n) in enumerate(zip(cs, shape))]
    terms = [u[0], u[1], u[2], u[0] * u[1], u[0] * u[2], u[1] * u[2], u[0] ** 2, u[1] ** 2, u[2] ** 2]
    f = sum(np.float32(coef) * term for coef, term in zip(rng.normal(0, 1, len(terms)), terms))
    head = u[0] ** 2 + u[1] ** 2 + u[2] ** 2 <= 0.8  # range set over the head, not the FOV corners
    f = (f - f[head].min()) / (f[head].max() - f[head].min())
    return _upsample(np.exp(np.float32(np.log(0.7)) + f.clip(0, 1) * np.float32(np.log(2.0))), STEP, shape)


def _native(t: dict, p: dict, mod: str, ref: bool, rng, scale: float, box, les, img):
    """Sample the template-space head on the modality's axis-aligned native grid through pose + deformation."""
    spacing = np.array(SPACING[mod]) * scale
    rot_m = _rot(p["offsets"][mod]["rotation_deg"])
    tr_m = np.array(p["offsets"][mod]["translation_mm"])
    rot = rot_m @ _rot(p["rotation_deg"])  # template mm -> native world mm: x = rot @ q + tr
    tr = rot_m @ p["translation_mm"] + tr_m
    corners = np.array(np.meshgrid(*t["head_box"], indexing="ij")).reshape(3, -1)
    world = rot @ corners + tr[:, None]
    lo, hi = world.min(1) - 6, world.max(1) + 6
    shape = tuple(int(np.ceil((h - low) / s)) + 1 for low, h, s in zip(lo, hi, spacing))
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = np.round(lo, 1)
    # native voxel -> rigidly mapped template mm q -> q + u(q) -> template voxel; computed every STEP voxels
    # and linearly interpolated (exact for the affine part; the displacement is far smoother than STEP)
    cs = tuple(-(-(n - 1) // STEP) + 1 for n in shape)
    g = np.indices(cs, dtype=np.float64).reshape(3, -1) * STEP
    q = rot.T @ (affine[:3, :3] @ g + (affine[:3, 3] - tr)[:, None])
    u = [ndi.map_coordinates(f, (q - COARSE_ORIGIN[:, None]) / COARSE_MM, order=1, mode="nearest")
         for f in p["disp"]]
    idx = (q + np.array(u) - t["affine"][:3, 3:4]) / t["res"]
    idx = _upsample(idx.reshape(3, *cs).astype(np.float32).transpose(1, 2, 3, 0), STEP, shape).reshape(-1, 3).T
    # slice profile: smooth along axes thicker than the template voxel (native and template axes ~ aligned)
    sig = np.sqrt(np.maximum(spacing**2 - t["res"] ** 2, 0)) / 2.355 / t["res"]
    img = ndi.gaussian_filter(img, sig, truncate=3.0) if sig.max() > 0.1 else img
    sig_n = 0.025 * CONTRAST[mod]["wm"]
    x = ndi.map_coordinates(img, idx, order=1, mode="constant", output=np.float32).reshape(shape)
    x *= _bias_field(rng, shape)
    x = np.sqrt((x + rng.standard_normal(shape, dtype=np.float32) * np.float32(sig_n)) ** 2
                + (rng.standard_normal(shape, dtype=np.float32) * np.float32(sig_n)) ** 2)
    data = np.round(x * np.float32(1000.0 / x.max())).astype(np.int16)
    out = dict(data=data, affine=affine)
    if ref:
        bb = t["brain_box"]
        brain = _sample_box(t["brain"][bb], idx, [b.start for b in bb]).reshape(shape) > 0.5
        seg = np.zeros(shape, np.uint8)
        for k, lab in ((0, 2), (1, 4), (2, 1)) if les is not None else ():  # nested: whole, core, necrosis
            seg[_sample_box(les[k], idx, [b.start for b in box]).reshape(shape) > 0.5] = lab
        seg[~brain] = 0
        out.update(brain=brain.astype(np.uint8), seg=seg)
    return out


def _save_nifti(data: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """Atomic NIfTI write (temp name in the same folder, then os.replace); nibabel's gzip has mtime 0."""
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm")
    with atomic_path(path) as tmp:
        img.to_filename(tmp)


def _save_json(obj: dict, path: Path) -> None:
    write_json_atomic(obj, path, indent=1)


def generate_subject(subject: str, index: int, raw_dir: str | Path, truth_dir: str | Path,
                     modalities: Sequence[str] = ("t1", "t2", "flair"), seed: int = 42,
                     spacing_scale: float = 1.0, n_lesions: tuple[int, int] = (1, 3), fault: str | None = None) -> dict:
    """Write one synthetic subject; the first modality is the reference grid of seg and brain mask.

    Files: {raw_dir}/{subject}/{modality}.nii.gz (int16, 0..1000), {raw_dir}/{subject}/seg.nii.gz (uint8,
    BraTS labels 0/1/2/4), {truth_dir}/{subject}_brainmask.nii.gz (uint8) and {truth_dir}/{subject}_truth.json.
    Pose convention: native world mm x = R q + t for template (MNI) mm q, R = Rotation.from_euler("xyz", deg).
    `fault`: one of voxflow.demo.faults.FAULTS built into the scans (recorded in the truth file).
    """
    modalities = list(modalities)
    if not 2 <= len(modalities) <= 4 or len(set(modalities)) != len(modalities) or \
            not set(modalities) <= set(MODALITIES):
        raise ValueError(f"modalities must be 2 to 4 distinct names of {MODALITIES}, got {modalities}")
    if not spacing_scale > 0:
        raise ValueError(f"spacing_scale must be > 0, got {spacing_scale}")
    lo_n, hi_n = (int(v) for v in n_lesions)
    if not 0 <= lo_n <= hi_n:
        raise ValueError(f"n_lesions must be (min, max) with 0 <= min <= max, got {n_lesions}")
    files = {k: Path(v) for k, v in demo_files(raw_dir, truth_dir, subject, modalities).items()}
    raw, truth_dir = Path(raw_dir) / subject, Path(truth_dir)
    raw.mkdir(parents=True, exist_ok=True)
    truth_dir.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng([seed, index])
    p = _draw_subject(rng, (lo_n, hi_n))
    if fault is not None and fault not in FAULTS:
        raise ValueError(f"unknown demo fault {fault!r}; known: {sorted(FAULTS)}")
    if fault == "far_rotation":  # upside down: far outside an affine registration's capture range
        p["rotation_deg"] = np.asarray(p["rotation_deg"], dtype=np.float64) + np.array([FAR_ROTATION_DEG, 0.0, 0.0])
    ref = modalities[0]
    p["offsets"] = {}
    mod_rngs = {}
    for m, s in zip(MODALITIES, p["mod_seeds"]):
        mod_rngs[m] = np.random.default_rng(int(s))
        rot, tr = mod_rngs[m].uniform(-3, 3, 3), mod_rngs[m].uniform(-3, 3, 3)  # motion between sequences
        p["offsets"][m] = dict(rotation_deg=np.round(rot * (m != ref), 4).tolist(),
                               translation_mm=np.round(tr * (m != ref), 4).tolist())
    t = _template(1 if spacing_scale < 2 else 2)
    box, les = _lesion_fields(t, p["lesions"])
    fr = _head_fractions(t, p)

    paths = {}
    for m in modalities:
        # a wrong contrast: the reference file holds a T2-weighted image (on the reference's own grid)
        contrast = "t2" if fault == "wrong_contrast" and m == ref else m
        img = _head_image(t, fr, contrast, box, les)
        nat = _native(t, p, m, m == ref, mod_rngs[m], spacing_scale, box, les, img)
        if m == ref and fault in ARRAY_FAULTS:
            nat["data"] = apply_fault(fault, nat["data"], seed=int(seed) * 1000 + int(index))
        paths[m] = files[m]
        _save_nifti(nat["data"], nat["affine"], paths[m])
        if m == ref:
            paths["seg"], paths["brainmask"] = files["seg"], files["brainmask"]
            _save_nifti(nat["seg"], nat["affine"], paths["seg"])
            _save_nifti(nat["brain"], nat["affine"], paths["brainmask"])
            ref_affine = nat["affine"]

    rot, tr = _rot(p["rotation_deg"]), p["translation_mm"]
    lesions = []
    for les_p in p["lesions"]:  # native centre: first-order inverse of the deformation, c - u(c)
        c = np.asarray(les_p["centre_mni_mm"])
        cq = (c - COARSE_ORIGIN) / COARSE_MM
        u = np.array([ndi.map_coordinates(f, cq[:, None], order=1, mode="nearest")[0] for f in p["disp"]])
        lesions.append(dict(centre_mni_mm=c.round(2).tolist(), centre_native_mm=(rot @ (c - u) + tr).round(2).tolist(),
                            **{k: round(float(les_p[k]), 2) for k in ("r_core_mm", "r_rim_mm", "r_edema_mm")}))
    truth = dict(subject=subject, index=int(index), seed=int(seed), reference=ref, modalities=modalities,
                 spacing_scale=float(spacing_scale), rotation_deg=np.round(p["rotation_deg"], 4).tolist(),
                 translation_mm=np.round(tr, 4).tolist(),
                 pose_convention="reference native mm x = R @ q + t with R = scipy Rotation.from_euler('xyz', "
                 "rotation_deg, degrees=True), q = MNI mm before the deformation (the image at x shows MNI point "
                 "q + u(q)); modality m: x_m = R_m @ x + t_m (modality_offsets)",
                 deformation=dict(amplitude_mm_p95=round(float(p["disp_amp_mm"]), 3),
                                  sigma_mm=round(float(p["disp_sigma_mm"]), 3)),
                 modality_offsets={m: p["offsets"][m] for m in modalities},
                 spacing_mm={m: [s * spacing_scale for s in SPACING[m]] for m in modalities},
                 reference_affine=ref_affine.tolist(), lesions=lesions, fault=fault)
    paths["truth"] = files["truth"]
    _save_json(truth, paths["truth"])
    return dict(paths={k: str(v) for k, v in paths.items()}, truth=truth)
