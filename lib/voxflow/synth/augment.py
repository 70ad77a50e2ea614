"""train.augment.synthetic_modality_p: training samples with one modality replaced by the synthesis model's output,
so that the segmentation model learns to work with the synthetic inputs it meets at inference
(voxflow.inputs.missing)."""

from __future__ import annotations

import logging

import numpy as np
import torch

log = logging.getLogger("voxflow.synth")


class SyntheticModality:
    """Replaces, with probability `p` per sample, one modality (drawn uniformly) of a batch of patches (B, M, *patch)
    by the synthesis model's prediction of it from the others. Draws come from their own seeded stream per
    (seed, step, sample), so they neither depend on the number of processes nor shift the augmentation's draws.
    Applied to the patch as the sampler reads it; a 2D/2.5D patch (a few slices) is too thin for the 3D generator
    and is left unchanged (a warning says so)."""

    def __init__(self, model_path: str | None, p: float, device: torch.device, dim: str = "3d"):
        from voxflow.synth.model import load_generator

        if not model_path:
            raise ValueError("train.augment.synthetic_modality_p > 0 needs the synthesis model (rule train_synthesis; "
                             "the workflow passes model/synthesis/generator.pt)")
        self.p, self.device, self.dim = float(p), device, dim
        self.generator, self.meta = load_generator(model_path, device)
        self.applied = 0
        if dim != "3d":
            log.warning("train.augment.synthetic_modality_p applies to 3D patches only: the %s configuration trains "
                        "on real modalities", dim)

    def draws(self, seed: int, step: int, index: int, n_modalities: int) -> int | None:
        """The modality sample `index` of batch `step` has replaced, or None."""
        rng = np.random.default_rng([int(seed), int(step), int(index), 0x5F7])
        if rng.random() >= self.p:
            return None
        return int(rng.integers(n_modalities))

    def __call__(self, img: torch.Tensor, seed: int, step: int, first: int = 0) -> torch.Tensor:
        from voxflow.synth.infer import synthesize

        if img.shape[2] < 8:  # a 2D patch of few slices: too thin for the 3D generator
            return img
        out = img
        for i in range(img.shape[0]):
            m = self.draws(seed, step, first + i, img.shape[1])
            if m is None:
                continue
            if out is img:
                out = img.clone()
            available = [j != m for j in range(img.shape[1])]
            patch = img[i].detach().float().cpu().numpy()
            # the brain: where an available channel is not 0 (the stores hold 0 outside their mask), so that the
            # synthetic channel is 0 outside it as at inference (the generator never learned the background)
            brain = np.any(np.delete(patch, m, axis=0) != 0, axis=0)
            filled = synthesize(patch, available, self.generator, self.meta, device=self.device, mask=brain)
            out[i, m] = torch.from_numpy(filled[m]).to(out.device, out.dtype)
            self.applied += 1
        return out
