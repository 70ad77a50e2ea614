"""Benchmark: voxflow ``sliding_window_predict`` vs MONAI ``sliding_window_inference``.

Same network (MONAI DynUNet, 1 -> 4 classes), same patch, overlap 0.5, Gaussian blending,
same window batch size, CPU, one thread, both blending softmax probabilities.  Each
implementation runs in its own process so peak RSS is comparable: a small "measure"
process starts exactly one worker (``--impl``) and reads the worker's peak RSS with
``getrusage(RUSAGE_CHILDREN)`` (a max over *all* reaped children, hence one per measure
process).  The worker warms up on a small volume, then times one full-volume run.

    python bench/sliding_window.py [--shape 160 192 160] [--patch 64 64 64]
    -> ... final line: sliding_window sw_speed_vs_monai=<x> sw_peakmem_vs_monai=<x> voxflow_s=<x> monai_s=<x>

``run_comparison`` (bench/common.py) runs the two measure processes; bench/train_infer.py reports it too.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence

from common import run_comparison

N_CLASSES = 4
FILTERS = (8, 16, 32, 64)  # modest: keeps the whole comparison around 1.5-2 min


def _worker(impl: str, shape: Sequence[int], patch: Sequence[int], overlap: float, batch_size: int, seed: int) -> dict:
    """Build the net, warm up, time one full-volume prediction with ``impl``."""
    import numpy as np
    import torch
    from monai.networks.nets import DynUNet

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    net = DynUNet(
        3, 1, N_CLASSES, kernel_size=[3] * 4, strides=[1, 2, 2, 2], upsample_kernel_size=[2] * 3, filters=list(FILTERS)
    ).eval()

    if impl == "voxflow":
        from voxflow.nn.sliding_window import sliding_window_predict

        def run(vol: np.ndarray) -> np.ndarray:
            return sliding_window_predict(
                vol, net, patch, N_CLASSES, overlap=overlap, weighting="gaussian", sigma_scale=0.125,
                batch_size=batch_size,
            )
    elif impl == "monai":
        from monai.inferers import sliding_window_inference

        def run(vol: np.ndarray) -> np.ndarray:
            return sliding_window_inference(
                torch.from_numpy(vol)[None], tuple(patch), batch_size, lambda x: torch.softmax(net(x), 1),
                overlap=overlap, mode="gaussian", sigma_scale=0.125,
            )[0].numpy()
    else:
        raise ValueError(impl)

    rng = np.random.default_rng(seed)
    with torch.no_grad():
        run(rng.standard_normal((1, *patch[:2], patch[2] * 3 // 2), dtype=np.float32))  # warm-up: one batch of 2
        vol = rng.standard_normal((1, *shape), dtype=np.float32)
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        probs = run(vol)
        seconds, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    assert probs.shape == (N_CLASSES, *shape)
    return {
        "impl": impl,
        "seconds": seconds,
        "user_s": r1.ru_utime - r0.ru_utime,
        "sys_s": r1.ru_stime - r0.ru_stime,
        "class_means": [float(probs[c].mean()) for c in range(N_CLASSES)],
    }


def _measure(impl: str, argv: list[str]) -> dict:
    """Run one worker; its peak RSS is the only child's ru_maxrss (KiB on Linux).

    glibc's *dynamic* mmap threshold makes peak RSS depend on allocation history (we saw
    +-30 MB between identical runs); a fixed 128 KiB threshold returns every large block
    to the OS on free, so peak RSS tracks peak live memory (repeat runs agree to <1 MB).
    It costs both workers the same extra page faults.
    """
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "131072")
    res = subprocess.run([sys.executable, __file__, "--impl", impl, *argv], env=env, capture_output=True, text=True,
                         check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{impl} worker failed:\n{res.stderr[-4000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["peak_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--impl", choices=["voxflow", "monai"], help="worker: run one implementation")
    ap.add_argument("--measure", choices=["voxflow", "monai"], help="run one worker, report its peak RSS")
    ap.add_argument("--shape", type=int, nargs=3, default=[160, 192, 160])
    ap.add_argument("--patch", type=int, nargs=3, default=[64, 64, 64])
    ap.add_argument("--overlap", type=float, default=0.5)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    if a.impl:
        print(json.dumps(_worker(a.impl, a.shape, a.patch, a.overlap, a.batch_size, a.seed)))
    elif a.measure:
        rest = ["--shape", *map(str, a.shape), "--patch", *map(str, a.patch), "--overlap", str(a.overlap),
                "--batch-size", str(a.batch_size), "--seed", str(a.seed)]
        print(json.dumps(_measure(a.measure, rest)))
    else:
        r = run_comparison(a.shape, a.patch, a.overlap, a.batch_size, a.seed)
        print(json.dumps(r))
        print(
            f"sliding_window sw_speed_vs_monai={r['sw_speed_vs_monai']:.3f} "
            f"sw_peakmem_vs_monai={r['sw_peakmem_vs_monai']:.3f} "
            f"voxflow_s={r['voxflow_s']:.2f} monai_s={r['monai_s']:.2f}"
        )


if __name__ == "__main__":
    main()
