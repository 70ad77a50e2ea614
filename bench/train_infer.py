"""Benchmark: zarr patch reads, CPU training speed, sliding-window inference against MONAI.

- patch_read_speedup: a random 128^3 patch of 4 channels read from a subject's zarr store (only the
  chunks it overlaps) vs decoding the four NIfTI files and cropping (what a NIfTI-based loader does).
- train_it_s: CPU training iterations per second of the demo's planned 3D U-Net (augmentation included).
- sw_speed_vs_monai, sw_peakmem_vs_monai: bench/sliding_window.py's comparison (run by bench/common.py; same
  network, patch, overlap and Gaussian mode; each implementation in its own subprocess for a clean peak-RSS
  reading).

Prints one final line:
  train_infer patch_read_speedup=<x> train_it_s=<x> sw_speed_vs_monai=<x> sw_peakmem_vs_monai=<x>
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import run_comparison


def patch_read_speedup(tmp: Path, shape=(182, 218, 182), patch=128, n_reads: int = 10) -> float:
    """Four 1 mm-sized channels as NIfTI (gzip) vs one zarr store; random 128^3 patches."""
    import nibabel as nib

    from voxflow.preprocess.store import write_subject_store

    rng = np.random.default_rng(0)
    # smooth-ish content so compression ratios are realistic
    base = rng.normal(size=[s // 8 for s in shape]).astype(np.float32)
    vol = np.kron(base, np.ones((8, 8, 8), np.float32))[: shape[0], : shape[1], : shape[2]]
    vol = np.pad(vol, [(0, s - v) for s, v in zip(shape, vol.shape)])
    chans = np.stack([vol + 0.1 * rng.normal(size=shape).astype(np.float32) for _ in range(4)])
    paths = []
    for c in range(4):
        p = tmp / f"c{c}.nii.gz"
        nib.Nifti1Image(chans[c].T, np.eye(4)).to_filename(str(p))
        paths.append(p)
    mask = np.ones(shape, np.uint8)
    store = tmp / "s.zarr"
    write_subject_store(store, chans, mask, (vol > 1).astype(np.uint8), ["a", "b", "c", "d"], (1, 1, 1),
                        (0, 0, 0), np.eye(3), {}, dtype="float16")
    starts = [[int(rng.integers(0, s - patch + 1)) for s in shape] for _ in range(n_reads)]

    import zarr

    arr = zarr.open_group(str(store), mode="r")["0"]  # opened once per worker, as the sampler does
    t0 = time.perf_counter()
    for st in starts:
        _ = arr[:, st[0]:st[0] + patch, st[1]:st[1] + patch, st[2]:st[2] + patch]
    t_zarr = (time.perf_counter() - t0) / n_reads
    t0 = time.perf_counter()
    for st in starts:
        _ = np.stack([np.asarray(nib.load(str(p)).dataobj, dtype=np.float32).T[
            st[0]:st[0] + patch, st[1]:st[1] + patch, st[2]:st[2] + patch] for p in paths])
    t_nii = (time.perf_counter() - t0) / n_reads
    print(f"  patch read: zarr {t_zarr * 1000:.0f} ms, NIfTI decode+crop {t_nii * 1000:.0f} ms", file=sys.stderr)
    return t_nii / t_zarr


def train_it_s(n_iters: int = 6, patch=(48, 48, 48), base_features: int = 16, batch: int = 2) -> float:
    """Iterations/s of a training step as the trainer runs it (augment + forward + backward + SGD)."""
    import torch

    from voxflow.training.augment import AugmentConfig, augment_batch
    from voxflow.training.losses import make_loss
    from voxflow.nn.networks import build_network

    fmt = torch.channels_last_3d
    net = build_network("3d", 3, 4, patch, base_features=base_features).to(memory_format=fmt)
    opt = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.99, nesterov=True)
    loss_fn = make_loss("dice_ce", 4)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, *patch)
    y = torch.randint(0, 4, (batch, 1, *patch))
    times = []
    for i in range(n_iters + 1):
        t0 = time.perf_counter()
        xa, ya = augment_batch(x, y, AugmentConfig(), gen)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(xa.contiguous(memory_format=fmt)), ya)
        loss.backward()
        opt.step()
        if i:  # first iteration warms up oneDNN
            times.append(time.perf_counter() - t0)
    print(f"  train step {np.mean(times):.2f} s (patch {patch}, batch {batch}, base {base_features})", file=sys.stderr)
    return 1.0 / float(np.mean(times))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smaller sliding-window comparison")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(torch.get_num_threads())
    with tempfile.TemporaryDirectory() as tmp:
        speedup = patch_read_speedup(Path(tmp))
    its = train_it_s()
    shape = (96, 112, 96) if args.quick else (160, 192, 160)
    sw = run_comparison(shape=shape)
    print(f"train_infer patch_read_speedup={speedup:.1f} train_it_s={its:.3f} "
          f"sw_speed_vs_monai={sw['sw_speed_vs_monai']:.3f} sw_peakmem_vs_monai={sw['sw_peakmem_vs_monai']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
