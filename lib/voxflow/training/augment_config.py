"""The augmentation settings (`train.augment`): one dataclass read by the spatial and intensity augmenter
(voxflow.training.augment) and the MRI-artefact one (voxflow.training.augment_mri)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from voxflow.training.draws import Range


@dataclass
class AugmentConfig:
    """Probabilities (per sample; mirroring per sample and axis) and ranges.

    Defaults follow nnU-Net. ``scale_range``: factor s multiplies the sampling
    coordinates, so s > 1 zooms out. ``elastic_magnitude``: largest displacement
    in voxels; ``elastic_spacing``: control-point spacing in voxels;
    ``elastic_sigma``: Gaussian smoothing of the control grid, in control points.
    ``mirror_axes``: spatial axes (0 = first spatial axis) that may be flipped,
    None for all. ``image_padding``: grid_sample padding for the image; "border"
    (default) repeats edge intensities, which for z-scored MRI avoids the
    artificial "0 = mean intensity" rim that "zeros" would paint into background.
    The label is always padded with 0 (background). Gamma, noise, brightness and
    contrast draw their factors per sample and channel (noise: per sample).
    ``p_inverted_gamma``: nnU-Net's second gamma (p 0.1), applied to the inverted image
    (1 - (1 - u) ** gamma on [0, 1]-rescaled intensities), with ``gamma_range``.

    MRI artefacts (TorchIO's transforms as the anchor; see :mod:`voxflow.training.augment_mri`).
    A sample is chosen with ``p_<artefact>``, then each channel with ``p_per_channel``
    (0.5, nnU-Net's value for low resolution), so a channel's rate is the product
    (e.g. 0.25 x 0.5 for low resolution, as in nnU-Net).
    The defaults keep them rare: they are acquisition failures that a segmentation
    should survive, not the typical image, and several at once would make a patch
    unlike any scan. Low resolution is as in nnU-Net (p 0.25: thick-slice and
    upsampled acquisitions are common); bias field, motion and ghosting 0.1 (common
    in clinical data, and ghosting/motion are the costliest here); spikes 0.05 (rare,
    hardware faults). Set any p to 0 to switch an artefact off (nothing is then drawn).
    They run after noise, brightness, contrast and gamma (nnU-Net also simulates low
    resolution after noise), and draw after them, so their draws never shift the others'.

    * ``bias_field_coefficient``/``bias_field_order``: log-field = polynomial of that
      order in patch coordinates scaled to [-1, 1], coefficients uniform in
      [-c, c] (TorchIO: 0.5, order 3), on the intensity above the channel's minimum.
      Over a patch, not the whole volume, so it varies faster than a scanner's would.
    * ``motion_degrees``/``motion_translation`` (voxels)/``motion_transforms``: that
      many rigid movements, each within +-degrees about every axis (in-plane in 2D)
      and +-translation along each (TorchIO: 10, 10 mm, 2); the k-space is put
      together from equal segments (+-30% jitter) of the moved copies' spectra.
    * ``ghosting_count_range``/``ghosting_intensity_range``/``ghosting_restore``:
      every n-th k-space plane along a random axis scaled by 1 - intensity; the
      centre |f| <= restore * size / 2 (and DC always) is kept (TorchIO: (4, 10), (0.5, 1)).
    * ``spike_count_range``/``spike_intensity_range``: that many bright k-space points,
      i.e. stripes of amplitude intensity x channel std (TorchIO's (1, 3) x k-space
      maximum is about (0.65, 2) std for a brain volume with its background).
    * ``low_res_factor_range``/``low_res_axes``: one axis (from ``low_res_axes``, None
      for all) averaged down by the factor, then linearly interpolated back.

    Bias field, motion, ghosting and spikes restore each channel's mean and std.
    """

    p_rotation: float = 0.2
    rotation_deg: float = 30.0
    p_scaling: float = 0.2
    scale_range: Range = (0.7, 1.4)
    p_elastic: float = 0.2
    elastic_magnitude: Range = (2.0, 6.0)
    elastic_spacing: float = 16.0
    elastic_sigma: float = 1.0
    p_mirror: float = 0.5
    mirror_axes: tuple[int, ...] | None = None
    image_padding: str = "border"
    p_gamma: float = 0.3
    gamma_range: Range = (0.7, 1.5)
    p_noise: float = 0.1
    noise_variance: Range = (0.0, 0.1)
    p_brightness: float = 0.15
    brightness_range: Range = (0.75, 1.25)
    p_contrast: float = 0.15
    contrast_range: Range = (0.75, 1.25)
    p_inverted_gamma: float = 0.1
    p_per_channel: float = 0.5
    p_bias_field: float = 0.1
    bias_field_coefficient: float = 0.5
    bias_field_order: int = 3
    p_motion: float = 0.1
    motion_degrees: float = 10.0
    motion_translation: float = 10.0
    motion_transforms: int = 2
    p_ghosting: float = 0.1
    ghosting_count_range: tuple[int, int] = (4, 10)
    ghosting_intensity_range: Range = (0.5, 1.0)
    ghosting_restore: float = 0.0
    p_spike: float = 0.05
    spike_count_range: tuple[int, int] = (1, 2)
    spike_intensity_range: Range = (0.5, 2.0)
    p_low_res: float = 0.25
    low_res_factor_range: Range = (1.5, 4.0)
    low_res_axes: tuple[int, ...] | None = None
    # the probability that a training sample has one modality replaced by the synthesis model's output
    # (voxflow.synth.augment; needs the cohort's synthesis model, which the workflow then trains first)
    synthetic_modality_p: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.synthetic_modality_p) <= 1.0:
            raise ValueError(f"augment.synthetic_modality_p must be a probability in [0, 1], "
                             f"got {self.synthetic_modality_p}")
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name.startswith("p_") and not 0.0 <= float(v) <= 1.0:
                raise ValueError(f"augment.{f.name} must be a probability in [0, 1], got {v}")
            if f.name.endswith(("_range", "_magnitude", "_variance")):
                if (len(v) != 2 or not all(math.isfinite(float(e)) for e in v) or float(v[0]) > float(v[1])
                        or float(v[0]) < 0):
                    raise ValueError(f"augment.{f.name} must be [low, high] with 0 <= low <= high, got {v}")
                setattr(self, f.name, (float(v[0]), float(v[1])))
        for name in ("ghosting_count_range", "spike_count_range"):
            lo, hi = getattr(self, name)
            if lo != int(lo) or hi != int(hi) or lo < 1:
                raise ValueError(f"augment.{name} must be whole numbers >= 1, got {[lo, hi]}")
            setattr(self, name, (int(lo), int(hi)))
        if self.low_res_factor_range[0] < 1:
            raise ValueError(f"augment.low_res_factor_range must be factors >= 1, got {self.low_res_factor_range}")
        for name, lo, hi in (("bias_field_coefficient", 0, 10), ("motion_degrees", 0, 180),
                             ("motion_translation", 0, 1e4), ("ghosting_restore", 0, 1)):
            if not lo <= float(getattr(self, name)) <= hi:
                raise ValueError(f"augment.{name} must be in [{lo}, {hi}], got {getattr(self, name)}")
            setattr(self, name, float(getattr(self, name)))
        for name, lo, hi in (("bias_field_order", 0, 6), ("motion_transforms", 1, 16)):
            v = getattr(self, name)
            if isinstance(v, bool) or float(v) != int(v) or not lo <= int(v) <= hi:
                raise ValueError(f"augment.{name} must be a whole number in [{lo}, {hi}], got {v}")
            setattr(self, name, int(v))
        if self.mirror_axes is not None:
            self.mirror_axes = tuple(int(a) for a in self.mirror_axes)
        if self.low_res_axes is not None:
            self.low_res_axes = tuple(int(a) for a in self.low_res_axes)
            if not self.low_res_axes or not all(0 <= a <= 2 for a in self.low_res_axes):
                raise ValueError(f"augment.low_res_axes must be spatial axes 0..2, got {self.low_res_axes}")
        if self.image_padding not in ("border", "zeros", "reflection"):
            raise ValueError(f"augment.image_padding must be border, zeros or reflection, got {self.image_padding!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> AugmentConfig:
        """Build from a (partial) YAML mapping; unknown keys are an error, not ignored."""
        d = dict(d or {})
        allowed = [f.name for f in dataclasses.fields(cls)]
        for key in d:
            if key not in allowed:
                raise ValueError(f"unknown augmentation key {key!r}; allowed keys: {', '.join(allowed)}")
        return cls(**d)
