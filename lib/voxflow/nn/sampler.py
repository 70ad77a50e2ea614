"""Patch sampler on the per-subject zarr stores, with foreground oversampling.

A patch read touches only the zarr chunks it overlaps (bench/train_infer.py measures the
speed-up over decoding a NIfTI). Foreground patches are centred near a voxel drawn from the
foreground index written at preprocessing, so no label volume is ever scanned at train time.
At least `ceil(batch * fg_fraction)` samples of every batch are forced to contain foreground
(nnU-Net forces a third).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from voxflow.core.stores import foreground_samples, image_array, label_array, open_store, store_meta


@dataclass
class Store:
    """Lazily opened arrays of one subject's store (opened per DataLoader worker)."""

    path: str
    previous: str | None = None  # a cascade's low-resolution prediction (class indices), read with the label

    def open(self):
        import zarr

        self.prev = zarr.open_array(self.previous, mode="r") if self.previous else None
        root = open_store(self.path)
        self.image = image_array(root)
        self.label = label_array(root) if store_meta(root).get("has_label") else None
        self.fg = foreground_samples(root)
        self.shape = tuple(self.image.shape[1:])
        return self


def _window(start: Sequence[int], size: Sequence[int], shape: Sequence[int]):
    """The part of a patch inside the volume (slices) and the zero padding that completes it."""
    lo = [min(max(0, s), d) for s, d in zip(start, shape)]
    hi = [max(a, min(d, s + n)) for s, n, d, a in zip(start, size, shape, lo)]
    before = [min(n, a - s) if a > s else 0 for s, n, a in zip(start, size, lo)]  # patch entirely outside: all pad
    pad = [(p, n - p - (b - a)) for p, n, a, b in zip(before, size, lo, hi)]
    return tuple(slice(a, b) for a, b in zip(lo, hi)), pad


def read_patch(store: Store, start: Sequence[int], size: Sequence[int]) -> tuple[np.ndarray, np.ndarray | None]:
    """Read image (C,*size) and label (*size) at `start` (may extend outside: zero-padded)."""
    sl, pad = _window(start, size, store.shape)
    img = np.asarray(store.image[(slice(None),) + sl], dtype=np.float32)
    lab = np.asarray(store.label[sl]) if store.label is not None else None
    if any(p != (0, 0) for p in pad):
        img = np.pad(img, [(0, 0)] + pad)
        lab = np.pad(lab, pad) if lab is not None else None
    return img, lab


def read_previous(store: Store, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """The previous stage's class indices on the same patch as `read_patch` (zero-padded outside)."""
    assert store.prev is not None
    sl, pad = _window(start, size, store.shape)
    return np.pad(np.asarray(store.prev[sl], dtype=np.int64), pad)


def choose_start(shape: Sequence[int], patch: Sequence[int], rng: np.random.Generator,
                 center: Sequence[int] | None = None) -> list[int]:
    """Random patch origin; if `center` is given the patch contains it (at a random offset)."""
    start = []
    for d, p, ax in zip(shape, patch, range(len(shape))):
        if center is None:
            lo, hi = min(0, d - p), max(0, d - p)
            start.append(int(rng.integers(lo, hi + 1)))
        else:
            c = int(center[ax])
            lo, hi = c - p + 1, c
            # keep the patch inside the volume where possible
            lo, hi = max(lo, min(0, d - p)), min(hi, max(0, d - p))
            start.append(int(rng.integers(lo, hi + 1)) if hi >= lo else c - p // 2)
    return start


class PatchBatches(torch.utils.data.IterableDataset):
    """Infinite stream of (image (B,C,*patch), label (B,1,*patch) int64) batches.

    `label_lut` maps stored label values (e.g. BraTS 0,1,2,4) to contiguous class indices.
    `centre_z`: a forced-foreground patch has its foreground voxel on its centre z slice (2D/2.5D
    train on the centre slice of a k-slice patch, which must then contain the foreground).
    `rank`/`world`: yield only samples ``[rank*B/world, (rank+1)*B/world)`` of each global batch of
    `batch_size`. Every rank draws the whole batch from the same seeded RNG and reads only its own
    patches, so the global batch is the same whatever the number of processes (DDP).
    Batch k of the stream is drawn from its own generator, seeded by (seed, k): the stream is the
    same whatever the number of DataLoader workers, and a run resumed at batch `start` (set before
    iterating) continues exactly where an uninterrupted one would be.
    """

    def __init__(self, paths: Sequence[str], patch: Sequence[int], batch_size: int, fg_fraction: float = 1 / 3,
                 label_values: Sequence[int] = (0, 1), seed: int = 0, centre_z: bool = False,
                 rank: int = 0, world: int = 1, previous: Sequence[str] | None = None):
        if batch_size % world or not 0 <= rank < world:
            raise ValueError(f"batch size {batch_size} cannot be split over {world} processes (rank {rank})")
        self.paths, self.patch, self.batch_size = list(paths), list(patch), batch_size
        self.previous = list(previous) if previous else [None] * len(self.paths)
        self.n_classes = len(label_values)
        local = batch_size // world
        self.mine = range(rank * local, (rank + 1) * local)
        self.centre_z = centre_z
        self.n_fg = min(batch_size, max(1, math.ceil(batch_size * fg_fraction))) if fg_fraction > 0 else 0
        lut = np.zeros(256, dtype=np.int64)
        for i, v in enumerate(label_values):
            lut[v] = i
        self.lut, self.seed = lut, seed
        self.start = 0  # index of the first batch (a resumed run: steps already trained)

    def _batch_indices(self):
        """The global indices of the batches this worker yields: the DataLoader takes batches from its
        workers in turn, so worker w of W yields start + w, start + w + W, ..."""
        info = torch.utils.data.get_worker_info()
        wid, n = (info.id, info.num_workers) if info is not None else (0, 1)
        k = self.start + wid
        while True:
            yield k
            k += n

    def sample(self, store: Store, rng: np.random.Generator, force_fg: bool):
        return read_patch(store, self.draw(store, rng, force_fg), self.patch)

    def draw(self, store: Store, rng: np.random.Generator, force_fg: bool) -> list[int]:
        """A patch origin; uses only the store's metadata, so it costs no read."""
        center = None
        if force_fg and store.fg:
            classes = [k for k in store.fg if k != "any" and len(store.fg[k])]
            key = classes[int(rng.integers(len(classes)))] if classes else "any"
            coords = store.fg[key]
            if len(coords):
                center = coords[int(rng.integers(len(coords)))]
        start = choose_start(store.shape, self.patch, rng, center)
        if self.centre_z and center is not None:
            start[0] = int(center[0]) - self.patch[0] // 2
        return start

    def __iter__(self):
        stores = [Store(p, prev).open() for p, prev in zip(self.paths, self.previous)]
        for k in self._batch_indices():
            rng = np.random.default_rng([self.seed, k])
            imgs, labs = [], []
            for i in range(self.batch_size):
                force = i >= self.batch_size - self.n_fg
                store = stores[int(rng.integers(len(stores)))]
                start = self.draw(store, rng, force)
                if i not in self.mine:
                    continue
                img, lab = read_patch(store, start, self.patch)
                imgs.append(img)
                labs.append(self.lut[lab] if lab is not None else np.zeros(img.shape[1:], np.int64))
                if store.prev is not None:  # target + n_classes * previous (voxflow.planning.cascade.encode_pair)
                    labs[-1] = labs[-1] + self.n_classes * read_previous(store, start, self.patch)
            yield torch.from_numpy(np.stack(imgs)), torch.from_numpy(np.stack(labs)[:, None])


def make_loader(dataset: PatchBatches, workers: int) -> torch.utils.data.DataLoader:
    """Batches come whole from each worker (batch_size=None), so the forced-foreground rule holds per batch."""
    return torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers,
                                       persistent_workers=workers > 0, pin_memory=torch.cuda.is_available(),
                                       prefetch_factor=2 if workers > 0 else None)
