"""Benchmark: CPU training throughput (voxels/s) of voxflow's planned U-Net step against a MONAI tutorial loop.

Both loops train on the same data (synthetic BraTS-like subjects: 4 channels, labels 0/1/2/4 mapped to 4
classes, written as voxflow zarr stores in a temporary directory) with the same patch size, batch size,
channels, output classes, torch.set_num_threads (= the cores this process may use) and DataLoader workers.

- voxflow: the plan (`voxflow.planning.planner.make_plans` on the stores' fingerprint, with config/config.yaml over
  the schema defaults, as the workflow reads them; `--patch`/`--batch` are passed as the config's
  model.patch_size/model.batch_size overrides), the network `voxflow.inference.model.network_from_plans` (deep
  supervision as configured), and one step as `voxflow.training.train._train` runs it: PatchBatches/make_loader
  reading the zarr stores, to_network_input, augment_samples (the configured AugmentConfig, a generator per
  sample), channels-last, autocast off on CPU, the configured loss, backward, gradient clipping at 12, the
  configured optimizer with the poly learning rate: `voxflow.training.train.train_step`, the loop body itself.
  `--base-features N`
  overrides model.base_features (the schema's default is 32, config/config.yaml's 16).
- MONAI: the tutorial loop (spleen_segmentation_3d style): in-memory volumes in a CacheDataset, Compose of
  RandCropByPosNegLabeld(num_samples=batch, pos=1, neg=1) and RandFlipd on each of the 3 axes (p 0.5),
  DataLoader(batch_size=1), UNet(channels 16-32-64-128, strides 2-2-2, num_res_units=2; MONAI's default
  instance norm, `--monai-norm batch` for the tutorial's batch norm), DiceCELoss(to_onehot_y, softmax),
  Adam(lr 1e-4), channels-first as in the tutorial.

By default both loops are set up in this process and timed in turn, one iteration each, `--warmup` then
`--iters` times: on a shared machine (other jobs come and go) both then see the same load, which matters more
for the ratio than the clean state of `--isolate` (each side in its own subprocess, one after the other,
`--rounds` pairs in alternating order). An iteration is the whole loop body, batch fetch included; the step
time is the median over the timed iterations, and voxels/s = batch * prod(patch) / step time. The voxflow side
also reports per-phase medians (data wait, augmentation, forward + loss, backward, clip, optimizer step) and
both report their convolutions' FLOPs per step (forward + backward, counted once after the timing by
torch.utils.flop_counter). The plan on CPU picks the strided stem (model.stem auto; `--stem full_resolution`
for nnU-Net's topology, which convolves at full resolution: 2 convolutions of base_features channels in the
encoder, 2 in the decoder, about 8x the FLOPs per voxel of MONAI's UNet, whose first convolution is strided
as the strided stem's is).

glibc keeps freed memory in the voxflow process as in training (`voxflow.training.train.retain_freed_memory`;
`--no-retain-freed-memory` to compare; in the default interleaved mode it then holds for the MONAI loop too,
which allocates far less). `--ablate` instead times network-only
steps (fixed input, no data or augmentation) of variants, interleaved: channels-last instance norm vs torch's,
channels-first, batch norm (its cost only), deep supervision, 1 thread, base features 8/32, MONAI's UNet with
instance/batch norm and channels-last, oneDNN off (timed once: ~15x slower).

Prints one final line:
  train_throughput vox_s_voxflow=<x> vox_s_monai=<x> ... vox_s_ratio_vs_monai=<x>
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import CONFIG, read_config

MODALITIES = ["t1", "t1ce", "t2", "flair"]
LABEL_VALUES = [0, 1, 2, 4]


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# ---------------------------------------------------------------- data


def synthetic_subject(shape, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(4, *shape) z-scored-like image, brain mask, BraTS-like label (nested 2 > 1 > 4 blobs inside the brain)."""
    zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in shape], indexing="ij")
    brain = (zz / 0.8) ** 2 + (yy / 0.85) ** 2 + (xx / 0.75) ** 2 < 1
    c = rng.uniform(-0.35, 0.35, 3).astype(np.float32)
    r = ((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2) ** 0.5
    rad = rng.uniform(0.18, 0.3)
    label = np.zeros(shape, np.uint8)
    label[(r < rad) & brain] = 2
    label[(r < 0.6 * rad) & brain] = 1
    label[(r < 0.6 * rad) & (r > 0.4 * rad) & brain] = 4
    coarse = rng.normal(size=(4, *[s // 8 + 1 for s in shape])).astype(np.float32)
    smooth = np.stack([np.kron(ch, np.ones((8, 8, 8), np.float32))[: shape[0], : shape[1], : shape[2]]
                       for ch in coarse])
    img = 0.3 * smooth + 0.2 * rng.normal(size=(4, *shape)).astype(np.float32)
    img += np.stack([(label == v) * (0.5 + 0.4 * k) for k, v in enumerate((2, 1, 4, 2))]).astype(np.float32)
    img[:, ~brain] = 0
    return img.astype(np.float32), brain.astype(np.uint8), label


def write_stores(out: Path, n: int, shape, seed: int = 0) -> dict[str, str]:
    from voxflow.preprocess.store import write_subject_store

    rng = np.random.default_rng(seed)
    stores = {}
    for i in range(n):
        img, mask, lab = synthetic_subject(shape, rng)
        path = out / f"sub-{i:02d}.zarr"
        write_subject_store(path, img, mask, lab, MODALITIES, (2.0, 2.0, 2.0), (0, 0, 0), np.eye(3), {})
        stores[f"sub-{i:02d}"] = str(path)
    return stores


def load_config(patch: list[int], batch: int, base_features: int | None, deep_supervision: bool | None,
                workers: int | None, stem: str | None = None) -> dict:
    """config/config.yaml over the schema's defaults, as the workflow sees it, with the bench's overrides."""
    config = read_config(CONFIG)
    model, train = dict(config["model"]), dict(config["train"])
    model["patch_size"], model["batch_size"] = list(patch), batch
    if base_features is not None:
        model["base_features"] = base_features
    if stem is not None:
        model["stem"] = stem
    if deep_supervision is not None:
        train["deep_supervision"] = deep_supervision
    if workers is not None:
        train["workers"] = workers
    return {"model": model, "train": train}


def set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def flops_per_step(net, x, loss_fn, y) -> float:
    """Forward + backward FLOPs of one step's convolutions (torch's counter; the network's work)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        loss_fn(net(x), y).backward()
    net.zero_grad(set_to_none=True)
    return float(sum(n for op, n in fc.get_flop_counts()["Global"].items() if "convolution" in str(op)))


# ---------------------------------------------------------------- voxflow side


def setup_voxflow(args, stores: dict[str, str]) -> tuple:
    """The planned network and `_train`'s loop body: (step(i) -> [phase seconds], info, flops())."""
    import torch

    from voxflow.training import train as T
    from voxflow.training.augment import AugmentConfig
    from voxflow.planning.planner import make_plans
    from voxflow.planning.fingerprint import fingerprint
    from voxflow.nn.sampler import PatchBatches, make_loader

    allocator = "default"
    if args.retain_freed_memory is not False:  # None: as train.py does
        allocator = "retained (train.py)" if T.retain_freed_memory() else "default"
    cfg = load_config(args.patch, args.batch, args.base_features, args.deep_supervision, args.workers, args.stem)
    plans = make_plans(fingerprint(stores, "synchronous"), cfg, MODALITIES, LABEL_VALUES, "cpu")
    tcfg = cfg["train"]
    device = torch.device("cpu")
    seed, batch, first = int(tcfg["seed"]), int(plans["batch_size"]), 0
    torch.manual_seed(seed)
    net, loss_fn, opt, scaler, amp, fmt = T.training_objects(plans, tcfg, device)
    aug_cfg = AugmentConfig.from_dict(tcfg.get("augment") or {})
    ds = PatchBatches(list(stores.values()), T.sampler_patch(plans), batch, tcfg["fg_fraction"],
                      plans["label_values"], seed=seed, centre_z=plans["dim"] != "3d")
    loader = iter(make_loader(ds, int(tcfg["workers"])))
    total_steps = args.warmup + args.iters
    phases = ["data", "step"]
    net.train()

    def step(i: int) -> list[float]:
        t = [time.perf_counter()]
        img, lab = next(loader)
        t.append(time.perf_counter())
        loss = T.train_step(net, opt, scaler, loss_fn, img, lab, plans, aug_cfg, device=device, seed=seed,
                            step=i, first=first, lr=T.poly_lr(tcfg["lr"], i, total_steps), fmt=fmt, amp=amp)
        float(loss.detach())
        t.append(time.perf_counter())
        return [b - a for a, b in zip(t, t[1:])]

    def flops() -> float:
        x = torch.randn(batch, len(MODALITIES), *plans["patch_size"]).contiguous(memory_format=fmt)
        y = torch.randint(0, plans["n_classes"], (batch, 1, *plans["patch_size"]))
        return flops_per_step(net, x, loss_fn, y)

    info = {"side": "voxflow", "phase_names": phases, "params": sum(p.numel() for p in net.parameters()),
            "plan": {k: plans[k] for k in ("patch_size", "batch_size", "n_stages", "base_features", "stem")},
            "config": {k: tcfg[k] for k in ("optimizer", "loss", "deep_supervision", "workers")},
            "threads": torch.get_num_threads(), "allocator": allocator}
    return step, info, flops


# ---------------------------------------------------------------- MONAI side


def monai_unet(norm: str):
    from monai.networks.layers import Norm
    from monai.networks.nets import UNet

    return UNet(spatial_dims=3, in_channels=len(MODALITIES), out_channels=len(LABEL_VALUES),
                channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=2,
                norm=Norm.BATCH if norm == "batch" else Norm.INSTANCE)


def setup_monai(args, stores: dict[str, str]) -> tuple:
    """A MONAI tutorial training loop on the same subjects, held in memory: (step(i), info, flops())."""
    import torch
    import zarr
    from monai.data import CacheDataset, DataLoader, list_data_collate
    from monai.losses import DiceCELoss
    from monai.transforms import Compose, EnsureTyped, RandCropByPosNegLabeld, RandFlipd

    workers = args.workers
    if workers is None:  # the same workers as the voxflow side (config's train.workers)
        workers = int(load_config(args.patch, args.batch, None, None, None)["train"]["workers"])
    lut = np.zeros(256, np.int64)
    lut[LABEL_VALUES] = np.arange(len(LABEL_VALUES))
    data = []
    for path in stores.values():
        root = zarr.open_group(path, mode="r")
        data.append({"image": np.asarray(root["0"][:], np.float32),
                     "label": lut[np.asarray(root["labels/lesion/0"][:])][None].astype(np.float32)})
    keys = ["image", "label"]
    transforms = Compose([
        EnsureTyped(keys=keys),
        RandCropByPosNegLabeld(keys=keys, label_key="label", spatial_size=list(args.patch), pos=1, neg=1,
                               num_samples=args.batch, image_key="image", image_threshold=0),
        *[RandFlipd(keys=keys, prob=0.5, spatial_axis=a) for a in range(3)],
    ])
    ds = CacheDataset(data=data, transform=transforms, cache_rate=1.0, num_workers=0, progress=False)
    loader = DataLoader(ds, batch_size=1, shuffle=True, num_workers=workers, collate_fn=list_data_collate,
                        persistent_workers=workers > 0)

    def batches():
        while True:
            yield from loader

    device = torch.device("cpu")
    torch.manual_seed(0)
    model = monai_unet(args.monai_norm).to(device)
    loss_function = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.Adam(model.parameters(), 1e-4)
    it = batches()
    model.train()

    def step(i: int) -> list[float]:
        t0 = time.perf_counter()
        batch_data = next(it)
        inputs, labels = batch_data["image"].to(device), batch_data["label"].to(device)
        assert tuple(inputs.shape) == (args.batch, len(MODALITIES), *args.patch), inputs.shape
        optimizer.zero_grad()
        outputs = model(inputs)
        loss = loss_function(outputs, labels)
        loss.backward()
        optimizer.step()
        loss.item()
        return [time.perf_counter() - t0]

    def flops() -> float:
        x = torch.randn(args.batch, len(MODALITIES), *args.patch)
        y = torch.randint(0, len(LABEL_VALUES), (args.batch, 1, *args.patch))
        return flops_per_step(model, x, loss_function, y)

    info = {"side": "monai", "phase_names": ["step"], "params": sum(p.numel() for p in model.parameters()),
            "threads": torch.get_num_threads(), "workers": workers}
    return step, info, flops


def run_sides(args, stores: dict[str, str], sides: list[str]) -> list[dict]:
    """Set up the sides in this process, warm them up, then time them one step each in turn."""
    set_threads(args.threads)
    setups = [(setup_voxflow if s == "voxflow" else setup_monai)(args, stores) for s in sides]
    rows: list[list[list[float]]] = [[] for _ in sides]
    for i in range(args.warmup + args.iters):
        for k, (step, _, _) in enumerate(setups):
            phases = step(i)
            if i >= args.warmup:
                rows[k].append(phases)
    out = []
    for (_, info, flops), r in zip(setups, rows):
        names = info.pop("phase_names")
        out.append(info | {"steps": [float(sum(x)) for x in r], "flops": flops(),
                           "phases": {n: [float(x[j]) for x in r] for j, n in enumerate(names)}})
    return out


# ---------------------------------------------------------------- ablations


def run_ablations(args) -> None:
    """Network-only steps (fixed input and target; forward, loss, backward, clip, AdamW), interleaved."""
    import torch
    from torch import nn

    from voxflow.training.losses import deep_supervision_weights, make_loss
    from voxflow.nn.networks import build_network

    patch, batch = list(args.patch), args.batch
    x = torch.randn(batch, len(MODALITIES), *patch)
    y = torch.randint(0, len(LABEL_VALUES), (batch, 1, *patch))

    def swap_norms(m: nn.Module, batch_norm: bool = False) -> nn.Module:
        """torch's own InstanceNorm3d in place of build_network's channels-last one (the same maths), or
        BatchNorm3d (other maths: only what the norm costs)."""
        for name, c in m.named_children():
            if isinstance(c, nn.InstanceNorm3d):
                setattr(m, name, nn.BatchNorm3d(c.num_features) if batch_norm
                        else nn.InstanceNorm3d(c.num_features, eps=c.eps, affine=True))
            else:
                swap_norms(c, batch_norm)
        return m

    def variant(name: str, base=16, norm="default", cl=True, mkldnn=True, ds=False, threads=args.threads,
                stem="full_resolution"):
        if name.startswith("monai"):
            net = monai_unet("batch" if "batch" in name else "instance")
            from monai.losses import DiceCELoss
            loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
        else:
            net = build_network("3d", len(MODALITIES), len(LABEL_VALUES), patch, base_features=base,
                                deep_supervision=ds, stem=stem)
            if norm in ("instance", "batch"):
                net = swap_norms(net, norm == "batch")
            n_stages = len(getattr(net, "unet", net).filters)
            loss_fn = make_loss("dice_ce", len(LABEL_VALUES), None,
                                deep_supervision_weights(n_stages - 1) if ds else None)
        fmt = torch.channels_last_3d if cl else torch.contiguous_format
        net = net.to(memory_format=fmt)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
        xi = x.contiguous(memory_format=fmt)

        def step():
            torch.set_num_threads(threads)
            with torch.backends.mkldnn.flags(enabled=mkldnn):
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(net(xi), y)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 12.0)
                opt.step()
        return step

    b = args.base_features or 16
    variants = {
        f"voxflow b{b} (as built: channels-last instance norm)": variant("v", base=b),
        f"voxflow b{b} torch InstanceNorm3d (before)": variant("v", base=b, norm="instance"),
        f"voxflow b{b} channels-first (torch instance norm)": variant("v", base=b, cl=False),
        f"voxflow b{b} batch norm (other maths; cost only)": variant("v", base=b, norm="batch"),
        f"voxflow b{b} deep supervision": variant("v", base=b, ds=True),
        f"voxflow b{b} 1 thread": variant("v", base=b, threads=1),
        "voxflow b8": variant("v", base=8),
        f"voxflow b{b} strided stem": variant("v", base=b, stem="strided"),
        "voxflow b32 strided stem": variant("v", base=32, stem="strided"),
        "voxflow b32": variant("v", base=32),
        "monai UNet instance norm (tutorial: channels-first)": variant("monai", cl=False),
        "monai UNet instance norm channels-last": variant("monai"),
        "monai UNet batch norm": variant("monai batch", cl=False),
        f"voxflow b{b} oneDNN off (timed once)": variant("v", base=b, mkldnn=False),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for k, step in variants.items():
        if "once" not in k:
            step()  # warm-up (oneDNN primitives)
    for r in range(args.ablate_rounds):
        for k, step in variants.items():
            if "once" in k and r:
                continue
            t0 = time.perf_counter()
            step()
            times[k].append(time.perf_counter() - t0)
    torch.set_num_threads(args.threads)
    vox = batch * math.prod(patch)
    for k, ts in times.items():
        med = float(np.median(ts))
        print(f"  ablation {k:55s} {med * 1e3:7.0f} ms/step  {vox / med / 1e6:6.3f} Mvox/s  "
              f"(runs: {', '.join(f'{t * 1e3:.0f}' for t in ts)})", file=sys.stderr)


# ---------------------------------------------------------------- driver


def run_side(args, side: str, data: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--side", side, "--data", str(data),
           "--patch", *map(str, args.patch), "--batch", str(args.batch), "--iters", str(args.iters),
           "--warmup", str(args.warmup), "--threads", str(args.threads), "--monai-norm", args.monai_norm]
    if args.base_features is not None:
        cmd += ["--base-features", str(args.base_features)]
    if args.workers is not None:
        cmd += ["--workers", str(args.workers)]
    if args.deep_supervision is not None:
        cmd += ["--deep-supervision" if args.deep_supervision else "--no-deep-supervision"]
    if args.stem is not None:
        cmd += ["--stem", args.stem]
    if args.retain_freed_memory is not None:
        cmd += ["--retain-freed-memory" if args.retain_freed_memory else "--no-retain-freed-memory"]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True,
                          env=os.environ | {"PYTHONWARNINGS": "ignore"})
    if proc.returncode:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"{side} side failed ({proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patch", type=int, nargs="+", default=[64], help="patch size: one value (cube) or three")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--iters", type=int, default=8, help="timed iterations per side and round")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--isolate", action="store_true",
                    help="each side in its own subprocess, one after the other (default: interleaved, one process)")
    ap.add_argument("--rounds", type=int, default=1, help="with --isolate: voxflow/MONAI pairs, alternating order")
    ap.add_argument("--threads", type=int, default=cores(), help="torch threads (default: the usable cores)")
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: config train.workers)")
    ap.add_argument("--base-features", type=int, default=None, help="override model.base_features")
    ap.add_argument("--deep-supervision", action=argparse.BooleanOptionalAction, default=None,
                    help="override train.deep_supervision")
    ap.add_argument("--retain-freed-memory", action=argparse.BooleanOptionalAction, default=None,
                    help="voxflow side: glibc keeps freed memory (default: as train.py does)")
    ap.add_argument("--stem", choices=["auto", "full_resolution", "strided"], default=None,
                    help="override model.stem (default: the config's, auto: strided on CPU at this patch)")
    ap.add_argument("--monai-norm", choices=["instance", "batch"], default="instance")
    ap.add_argument("--subjects", type=int, default=4)
    ap.add_argument("--shape", type=int, nargs=3, default=[96, 112, 96], help="synthetic volume shape (z y x)")
    ap.add_argument("--ablate", action="store_true", help="network-only variants instead (see the docstring)")
    ap.add_argument("--ablate-rounds", type=int, default=3)
    ap.add_argument("--side", choices=["voxflow", "monai"], help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if len(args.patch) == 1:
        args.patch = args.patch * 3
    if len(args.patch) != 3:
        ap.error("--patch takes one value or three")
    if args.side:
        stores = json.loads((Path(args.data) / "stores.json").read_text())
        print(json.dumps(run_sides(args, stores, [args.side])[0]))
        return 0
    if args.ablate:
        set_threads(args.threads)
        if args.retain_freed_memory:
            from voxflow.training.train import retain_freed_memory

            print(f"  allocator retains freed memory: {retain_freed_memory()}", file=sys.stderr)
        run_ablations(args)
        return 0

    vox = args.batch * math.prod(args.patch)
    res: dict[str, list[dict]] = {"voxflow": [], "monai": []}
    with tempfile.TemporaryDirectory() as tmp:
        stores = write_stores(Path(tmp), args.subjects, args.shape)
        (Path(tmp) / "stores.json").write_text(json.dumps(stores))
        if args.isolate:
            for r in range(args.rounds):
                for side in (("voxflow", "monai") if r % 2 == 0 else ("monai", "voxflow")):
                    res[side].append(run_side(args, side, Path(tmp)))
        else:
            for out in run_sides(args, stores, ["voxflow", "monai"]):
                res[out["side"]].append(out)
    for side, outs in res.items():
        for r, out in enumerate(outs):
            print(f"  {'round ' + str(r + 1) + ' ' if args.isolate else ''}{side}: step median "
                  f"{np.median(out['steps']) * 1e3:.0f} ms (runs: {', '.join(f'{t * 1e3:.0f}' for t in out['steps'])})",
                  file=sys.stderr)
    step = {s: float(np.median([t for o in res[s] for t in o["steps"]])) for s in res}
    vs = {s: vox / step[s] for s in res}
    v, m = res["voxflow"][0], res["monai"][0]
    print(f"  voxflow plan {v['plan']} config {v['config']}, {v['params'] / 1e6:.2f} M parameters, "
          f"{v['flops'] / 1e9:.1f} GFLOP/step; threads {v['threads']}, allocator {v['allocator']}", file=sys.stderr)
    print(f"  monai UNet(16-32-64-128, strides 2, 2 res units, {args.monai_norm} norm), {m['params'] / 1e6:.2f} M "
          f"parameters, {m['flops'] / 1e9:.1f} GFLOP/step; workers {m['workers']}", file=sys.stderr)
    phases = {p: float(np.median([t for o in res["voxflow"] for t in o["phases"][p]])) for p in v["phases"]}
    print("  voxflow phases (median ms): " + ", ".join(f"{p} {t * 1e3:.0f}" for p, t in phases.items()),
          file=sys.stderr)
    gflops = {s: res[s][0]["flops"] / step[s] / 1e9 for s in res}
    print(f"  achieved GFLOP/s: voxflow {gflops['voxflow']:.1f}, monai {gflops['monai']:.1f}; voxflow does "
          f"{v['flops'] / m['flops']:.1f}x MONAI's FLOPs per voxel", file=sys.stderr)
    print(f"train_throughput vox_s_voxflow={vs['voxflow']:.0f} vox_s_monai={vs['monai']:.0f} "
          f"step_s_voxflow={step['voxflow']:.3f} step_s_monai={step['monai']:.3f} "
          f"flop_s_ratio_vs_monai={gflops['voxflow'] / gflops['monai']:.3f} "
          f"vox_s_ratio_vs_monai={vs['voxflow'] / vs['monai']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
