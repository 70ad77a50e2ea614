"""Fill the missing modalities of one volume with a trained synthesis generator (sliding window)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from voxflow.nn.sliding_window import sliding_window_predict

CPU = torch.device("cpu")


class _ChannelsLast3d(torch.nn.Module):
    """The generator fed channels-last inputs (the format it trains in: oneDNN's fast path on CPU)."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.contiguous(memory_format=torch.channels_last_3d))


def synthesize(image: np.ndarray, available: Sequence[bool], generator: torch.nn.Module, meta: dict,
               device: torch.device | str = CPU, mask: np.ndarray | None = None,
               overlap: float = 0.5, batch_size: int = 2, progress: bool = False) -> np.ndarray:
    """(M, Z, Y, X) float32 with every modality: the available channels are `image`'s own values (bit-identical),
    the unavailable ones the generator's output, blended over sliding windows of ``meta["patch_size"]`` with
    Gaussian weights, and set to 0 outside `mask` when one is given. The unavailable channels of `image` are
    never read (they are zeroed at the generator's input).

    `meta`: the dict :func:`voxflow.synth.model.load_generator` returns (needs "patch_size", "n_modalities")."""
    image = np.asarray(image)
    avail = [bool(a) for a in available]
    m = int(meta["n_modalities"])
    if image.ndim != 4:
        raise ValueError(f"synthesize expects an image (M, Z, Y, X), got shape {image.shape}")
    if image.shape[0] != m or len(avail) != m:
        raise ValueError(f"the synthesis model has {m} modalities ({', '.join(meta.get('modalities') or [])}); "
                         f"got an image of {image.shape[0]} channels and {len(avail)} availability flags")
    if not any(avail):
        raise ValueError("no modality is available: synthesis needs at least one real image")
    if mask is not None and tuple(mask.shape) != tuple(image.shape[1:]):
        raise ValueError(f"mask shape {tuple(mask.shape)} differs from the image's {tuple(image.shape[1:])}")
    out = np.array(image, dtype=np.float32, copy=True)
    missing = [c for c, a in enumerate(avail) if not a]
    if not missing:
        return out
    a = np.asarray(avail, np.float32)[:, None, None, None]
    x = np.concatenate([out * a, np.broadcast_to(a, out.shape)], axis=0).astype(np.float32)
    was_training = generator.training
    generator.eval()
    try:
        pred = sliding_window_predict(x, _ChannelsLast3d(generator), meta["patch_size"], m, overlap=overlap,
                                      weighting="gaussian", batch_size=batch_size, device=device,
                                      activation="none", progress=progress)
    finally:
        generator.train(was_training)
    for c in missing:
        out[c] = pred[c]
        if mask is not None:
            out[c][np.asarray(mask) == 0] = 0.0
    return out
