"""Realistic faults to inject into demo scans, for testing that the cohort QC (voxflow.qc.scores) catches them.

Each function takes a volume (numpy, z-y-x) and returns a corrupted copy, seeded: k-space motion ghosting, a
strong extra bias field, heavy Rician noise, a rotation far outside what affine registration recovers, and a
brain mask with most of the brain cut off (a skull-stripping failure). A wrong contrast needs no function: give
one modality's file as another's.
"""

from __future__ import annotations

import numpy as np

# The faults the demo generator can build into a subject (config demo.faults; voxflow.demo.mri.generate_subject).
ARRAY_FAULTS = ("motion_ghosting", "strong_bias", "rician_noise")  # applied to the reference modality's voxels
FAULTS = (*ARRAY_FAULTS, "wrong_contrast", "far_rotation")  # the last two: in the generator's contrast and pose
FAR_ROTATION_DEG = 150.0


def motion_ghosting(img: np.ndarray, shift_vox: float = 6.0, fraction: float = 0.3, axis: int = 1,
                    seed: int = 0) -> np.ndarray:
    """Rigid motion during part of the acquisition: a random `fraction` of the k-space lines along the phase-encoding
    `axis` is acquired with the head moved by `shift_vox` voxels (a linear phase ramp on those lines), which
    leaves ghosts of the head along that axis in the magnitude image."""
    rng = np.random.default_rng(seed)
    k = np.fft.fftn(np.asarray(img, dtype=np.float64))
    n = img.shape[axis]
    moved = rng.random(n) < fraction
    freqs = np.fft.fftfreq(n)
    ramp = np.where(moved, np.exp(-2j * np.pi * freqs * shift_vox), 1.0)
    shape = [1] * img.ndim
    shape[axis] = n
    out = np.abs(np.fft.ifftn(k * ramp.reshape(shape)))
    return out.astype(np.float32)


def bias_field(shape: tuple[int, ...], strength: float = 0.6, seed: int = 0) -> np.ndarray:
    """A smooth multiplicative field exp(p(x)), p a random second-order polynomial of the normalized coordinates
    scaled so that the field spans exp(+-strength) over the centre of the volume, where the head is (MR
    receive-coil inhomogeneity)."""
    rng = np.random.default_rng(seed)
    coords = [np.linspace(-1, 1, s) for s in shape]
    grids = np.meshgrid(*coords, indexing="ij")
    terms = list(grids) + [g * h for i, g in enumerate(grids) for h in grids[i:]]
    p = sum(c * t for c, t in zip(rng.normal(size=len(terms)), terms))
    p = np.asarray(p, dtype=np.float64)
    # spanned over the central ellipsoid, where the head is (over the whole field, the corners would take it)
    centre = sum(g ** 2 for g in grids) <= 0.5
    p = p - p[centre].mean()
    p = p / (np.abs(p[centre]).max() + 1e-12) * strength
    return np.exp(p).astype(np.float32)


def strong_bias(img: np.ndarray, strength: float = 0.6, seed: int = 0) -> np.ndarray:
    """The image times a strong extra bias field (bias_field)."""
    return (np.asarray(img, dtype=np.float32) * bias_field(img.shape, strength, seed)).astype(np.float32)


def rician_noise(img: np.ndarray, sigma_fraction: float = 0.15, seed: int = 0) -> np.ndarray:
    """Heavy noise as MR magnitude images have it (Rician): |x + n1 + i n2|, sigma a fraction of the image's 99th
    percentile."""
    rng = np.random.default_rng(seed)
    x = np.asarray(img, dtype=np.float64)
    sigma = sigma_fraction * float(np.percentile(x, 99))
    return np.sqrt((x + rng.normal(0, sigma, x.shape)) ** 2 + rng.normal(0, sigma, x.shape) ** 2).astype(np.float32)


def far_rotation(img: np.ndarray, degrees: float = 150.0, axes: tuple[int, int] = (0, 1),
                 order: int = 1) -> np.ndarray:
    """The volume rotated by `degrees` about its centre (an upside-down or mislabelled orientation): far outside
    the capture range of an affine registration started from the identity."""
    from scipy import ndimage

    return ndimage.rotate(np.asarray(img, dtype=np.float32), degrees, axes=axes, reshape=False, order=order,
                          mode="constant", cval=0.0)


def cut_mask(mask: np.ndarray, keep_fraction: float = 0.35, axis: int = 0) -> np.ndarray:
    """A brain mask with most of the brain cut off: only the first `keep_fraction` of its extent along `axis`
    (inferior to superior for z) is kept, as a failed skull stripping leaves it."""
    m = np.asarray(mask).astype(bool)
    idx = np.flatnonzero(m.any(axis=tuple(a for a in range(m.ndim) if a != axis)))
    if idx.size == 0:
        return m.astype(np.uint8)
    stop = idx[0] + max(1, int(round((idx[-1] - idx[0] + 1) * keep_fraction)))
    out = np.zeros_like(m)
    sl = [slice(None)] * m.ndim
    sl[axis] = slice(idx[0], stop)
    out[tuple(sl)] = m[tuple(sl)]
    return out.astype(np.uint8)


def apply_fault(name: str, data: np.ndarray, seed: int = 0) -> np.ndarray:
    """One of ARRAY_FAULTS applied to a demo scan (int16, 0..1000), returned on the same scale and type."""
    faults = {"motion_ghosting": lambda x: motion_ghosting(x, seed=seed),
              "strong_bias": lambda x: strong_bias(x, 0.7, seed=seed),
              "rician_noise": lambda x: rician_noise(x, seed=seed)}
    if name not in faults:
        raise ValueError(f"unknown array fault {name!r}; known: {sorted(faults)}")
    out = np.asarray(faults[name](np.asarray(data, dtype=np.float32)), dtype=np.float64)
    return np.round(np.clip(out, 0, None) * (1000.0 / max(float(out.max()), 1e-6))).astype(np.int16)
