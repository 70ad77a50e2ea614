"""Training one fold: patch batches from zarr, on-the-fly augmentation, Dice+CE, SGD-Nesterov + poly.

Resumable by construction: a checkpoint (model, optimizer, scaler, epoch, curve) is written
atomically every `checkpoint_every` epochs and rerunning the rule continues from it. The curve
(loss, validation pseudo-Dice) goes to CSV and PNG after every epoch.

Under torchrun (WORLD_SIZE > 1) the same function runs in every process with DDP: each process
reads and trains on its slice of every global batch (the plans' batch_size), the batch and its
augmentation being drawn per sample from seeds that do not depend on the number of processes, so
N processes compute the same steps as one; only rank 0 validates and writes files.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from voxflow.core.atomic import atomic_path
from voxflow.core.layout import CHECKPOINT_FILE, CURVE_CSV_FILE, CURVE_PNG_FILE, MODEL_FILE
from voxflow.nn import ddp
from voxflow.training.augment import AugmentConfig, augment_batch
from voxflow.training.losses import deep_supervision_weights, inverse_frequency_weights, make_loss
from voxflow.nn.sampler import PatchBatches, make_loader
from voxflow.planning.plans import Plans
from voxflow.inference.model import memory_format
from voxflow.inference.model import network_from_plans
from voxflow.nn.checkpoints import pick_device
from voxflow.nn.checkpoints import poly_lr
from voxflow.nn.checkpoints import resumable_checkpoint
from voxflow.nn.checkpoints import run_key
from voxflow.nn.checkpoints import sample_generator
from voxflow.nn.checkpoints import save_checkpoint
from voxflow.nn.checkpoints import store_stamps

log = logging.getLogger("voxflow.train")


def sampler_patch(plans: Plans | Mapping) -> list[int]:
    """The patch the sampler reads (Plans.sampler_patch): 3D as is (a cascade's low-resolution stage: `factor`
    times larger, pooled after the read); 2D/2.5D = k slices of (Y, X)."""
    return Plans.of(plans).sampler_patch


def with_previous_stage(img: torch.Tensor, lab: torch.Tensor,
                        plans: Plans | Mapping) -> tuple[torch.Tensor, torch.Tensor]:
    """A cascade's full-resolution stage: split the sampler's label (target and low-resolution prediction, encoded
    together so augmentation moves both alike) and append the prediction one-hot to the image channels."""
    p = Plans.of(plans)
    cascade = p.cascade
    if cascade is None or cascade.stage != "fullres":
        return img, lab
    from voxflow.planning.cascade import decode_pair, one_hot_previous

    target, prev = decode_pair(lab, p.n_classes)
    prev_hot = one_hot_previous(prev[:, 0], cascade.prev_channels).to(img.dtype)
    return torch.cat([img, prev_hot], 1), target


def to_network_input(img: torch.Tensor, lab: torch.Tensor, plans: Plans | Mapping):
    """(B,C,k,Y,X) -> (B,C*k,Y,X) for 2D/2.5D (channel order c*k+j, as SliceWise), label = centre slice; a
    cascade's low-resolution stage: the read patch pooled by its factor."""
    p = Plans.of(plans)
    cascade = p.cascade
    if cascade is not None and cascade.stage == "lowres":
        from voxflow.planning.cascade import downsample_image, downsample_label

        return downsample_image(img, cascade.factor), downsample_label(lab, cascade.factor)
    if p.is_3d:
        return img, lab
    b, c, k, y, x = img.shape
    return img.reshape(b, c * k, y, x), lab[:, :, k // 2]


def augment_samples(img: torch.Tensor, lab: torch.Tensor, cfg: AugmentConfig, seed: int, step: int,
                    first: int, context_slices: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment each sample with its own generator; `first` is the index of img[0] in the global batch.
    `context_slices` (2.5D): the k slices of one modality share one MRI artefact, as one acquisition's would."""
    out = [augment_batch(img[i:i + 1], lab[i:i + 1], cfg, sample_generator(seed, step, first + i, img.device),
                         context_slices=context_slices)
           for i in range(img.shape[0])]
    return torch.cat([o[0] for o in out]), torch.cat([o[1] for o in out])


def pseudo_dice(logits: torch.Tensor, target: torch.Tensor,
                n_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class TP, FP, FN over a batch (nnU-Net's online pseudo-Dice accumulates these)."""
    pred = logits.argmax(1)
    tgt = target[:, 0]
    tp, fp, fn = (np.zeros(n_classes) for _ in range(3))
    for c in range(1, n_classes):
        p, t = pred == c, tgt == c
        tp[c] += float((p & t).sum())
        fp[c] += float((p & ~t).sum())
        fn[c] += float((~p & t).sum())
    # whole foreground in slot 0
    p, t = pred > 0, tgt > 0
    tp[0], fp[0], fn[0] = float((p & t).sum()), float((p & ~t).sum()), float((~p & t).sum())
    return tp, fp, fn


def _dice(tp, fp, fn):
    return np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1e-9), np.nan)


# Training settings that do not change what a resumed fold computes: how it runs, and the number of epochs
# (a finished fold asked for more goes on from its checkpoint).
RESUMABLE_KEYS = frozenset({"device", "threads", "workers", "checkpoint_every", "gpus", "gpu", "processes",
                            "ddp_backend", "epochs", "amp", "budget_minutes"})


def epochs_within_budget(budget_minutes: float | None, epochs: int, elapsed_s: float, done_epochs: int) -> int:
    """The epochs that fit `train.budget_minutes` at the measured pace (`elapsed_s` for `done_epochs` epochs,
    validation and checkpoints included), never more than `epochs` nor fewer than those done; no budget: `epochs`.

    Measured once, after the first epoch, so the learning-rate schedule is set for the iterations that fit
    and decays to its end within the budget instead of being cut in the middle."""
    if budget_minutes is None or done_epochs <= 0:
        return epochs
    per_epoch = elapsed_s / done_epochs
    return max(done_epochs, min(epochs, int(budget_minutes * 60.0 / max(per_epoch, 1e-9))))


def over_budget(budget_minutes: float | None, elapsed_s: float) -> bool:
    """A hard stop for a machine slower than in the first epoch (another job started): the budget is kept."""
    return budget_minutes is not None and elapsed_s >= budget_minutes * 60.0


def write_curve(rows: list[dict], out_dir: Path) -> None:
    if not rows:
        return
    with atomic_path(out_dir / CURVE_CSV_FILE) as tmp:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(ep, [r["train_loss"] for r in rows], label="train loss", color="tab:blue")
    ax.set_xlabel("epoch"), ax.set_ylabel("loss")
    ax2 = ax.twinx()
    ax2.plot(ep, [r["val_dice_fg"] for r in rows], label="val pseudo-Dice (foreground)", color="tab:green")
    ax2.plot(ep, [r["val_dice_mean"] for r in rows], label="val pseudo-Dice (mean class)", color="tab:olive", ls="--")
    ax2.set_ylim(0, 1), ax2.set_ylabel("Dice")
    fig.legend(loc="lower center", ncol=3, fontsize=7)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    with atomic_path(out_dir / CURVE_PNG_FILE) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def train_fold(train_paths: list[str], val_paths: list[str], plans: Plans | Mapping, cfg: dict, out_dir: str | Path,
               device: torch.device | None = None, progress: bool = True,
               previous: dict[str, str] | None = None) -> dict:
    """Train (or resume) one fold; write checkpoint_latest.pt, model_final.pt, curve.csv/png.

    `previous` (a cascade's full-resolution stage): store path -> its out-of-fold low-resolution prediction (a
    zarr array of class indices on the store's grid).

    Returns the last curve row, this call's per-step losses of its last epoch (`step_losses`, mean
    over processes), the samples this process trained on, its rank and the world size.
    """
    plans = Plans.of(plans)
    d = ddp.setup(device or pick_device(cfg.get("device", "auto")), cfg.get("ddp_backend", "auto"))
    if plans.cascade_stage == "fullres" and not previous:
        raise ValueError("a cascade's full-resolution stage trains on the low-resolution stage's predictions: "
                         "give `previous`")
    info = _train(train_paths, val_paths, plans, cfg, Path(out_dir), d, progress and d.main, previous or {})
    ddp.teardown(d)  # not on an error: a process that fails exits, and torchrun stops the others
    return info


def training_objects(plans: Plans | Mapping, cfg: dict, device: torch.device, d: ddp.Dist | None = None) -> tuple:
    """What one step needs, from the plans and train settings: the network (in its memory format, on `device`), the
    loss (summed over DDP processes `d`), the optimizer, the AMP scaler, whether AMP is on, and the memory format.
    The one setup of training and of bench/train_throughput.py."""
    plans = Plans.of(plans)
    fmt = memory_format(plans)
    # torch's stubs for Module.to lack memory_format, which it takes (and passes to every tensor)
    net = network_from_plans(plans, cfg["deep_supervision"]).to(device, memory_format=fmt)  # type: ignore[call-overload]
    ds_weights = deep_supervision_weights(plans.n_stages - 1) if cfg["deep_supervision"] else None
    class_weights = None
    if cfg["loss"] == "wce":
        class_weights = inverse_frequency_weights(plans.class_voxel_counts)
    distributed = d is not None and d.enabled
    loss_fn = make_loss(cfg["loss"], plans.n_classes, class_weights, ds_weights,
                        ddp.sum_over_processes if distributed else None, d.world if d is not None else 1,
                        regions=plans.region_index_groups)
    opt: torch.optim.Optimizer
    if cfg["optimizer"] == "sgd":
        opt = torch.optim.SGD(net.parameters(), lr=cfg["lr"], momentum=0.99, nesterov=True,
                              weight_decay=cfg["weight_decay"])
    else:
        opt = torch.optim.AdamW(net.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    amp = bool(cfg.get("amp", True)) and device.type == "cuda"
    return net, loss_fn, opt, torch.amp.GradScaler("cuda", enabled=amp), amp, fmt


def train_step(net: torch.nn.Module, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler, loss_fn,
               img: torch.Tensor, lab: torch.Tensor, plans: Plans | Mapping, aug_cfg: AugmentConfig, *,
               device: torch.device,
               seed: int, step: int, first: int, lr: float, fmt: torch.memory_format, amp: bool,
               synthetic=None) -> torch.Tensor:
    """One optimisation step on a batch as the sampler gives it: a modality synthesized (optional), the network's
    input (2D slices, a cascade's pooling), augmentation drawn from (seed, step, sample), the previous stage's
    one-hot, Dice+CE, clipped gradients, the learning rate `lr`. The one loop body of training and of
    bench/train_throughput.py. Returns the loss (a tensor: reading it synchronises a GPU)."""
    plans = Plans.of(plans)
    img, lab = img.to(device, non_blocking=True), lab.to(device, non_blocking=True)
    if synthetic is not None:
        img = synthetic(img, seed, step, first)
    img, lab = to_network_input(img, lab, plans)
    img, lab = augment_samples(img, lab, aug_cfg, seed, step, first, plans.augment_slices)
    img, lab = with_previous_stage(img, lab, plans)
    img = img.contiguous(memory_format=fmt)
    for g in opt.param_groups:
        g["lr"] = lr
    opt.zero_grad(set_to_none=True)
    with torch.autocast(device.type, enabled=amp):
        out = net(img)
        loss = loss_fn(out, lab.long())
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    torch.nn.utils.clip_grad_norm_(net.parameters(), 12.0)
    scaler.step(opt)
    scaler.update()
    return loss


def retain_freed_memory() -> bool:
    """glibc: serve every allocation from the heap (no mmap) and never trim it, so that a step's freed activations
    are reused by the next instead of being unmapped and page-faulted in again (~450 000 minor faults, 1.5 s of
    system time per step of a 64^3 CPU network; bench/train_throughput.py: 4.60 -> 3.97 s per step). A training
    process keeps its peak memory, which it needs again at the next step anyway. False where not glibc."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # glibc only (musl has no mallopt of these)  # noqa: B018
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))


def _train(train_paths, val_paths, plans, cfg, out_dir: Path, d: ddp.Dist, progress: bool,
           previous: dict[str, str] | None = None) -> dict:
    previous = previous or {}
    plans = Plans.of(plans)
    from tqdm import tqdm

    device, batch = d.device, plans.batch_size
    if batch % d.world:
        raise ValueError(f"the planned batch size {batch} (global, over all processes) is not divisible by "
                         f"{d.world} training processes; set model.batch_size to a multiple of {d.world}")
    first = d.rank * (batch // d.world)  # index of this process's first sample in each global batch
    out_dir.mkdir(parents=True, exist_ok=True)
    if d.main:
        for stem in (Path(CHECKPOINT_FILE).stem, Path(MODEL_FILE).stem, "curve"):  # half-written files of a killed run
            for stale in out_dir.glob(f".{stem}.tmp-*"):
                stale.unlink(missing_ok=True)
    seed = int(cfg["seed"])
    torch.manual_seed(seed)
    if device.type == "cpu":
        retain_freed_memory()
    net, loss_fn, opt, scaler, amp, fmt = training_objects(plans, cfg, device, d)
    epochs, iters = int(cfg["epochs"]), int(cfg["iters_per_epoch"])
    budget = cfg.get("budget_minutes")
    elapsed = 0.0  # training seconds of this fold, over resumes (the budget's clock)
    ckpt_path = out_dir / CHECKPOINT_FILE
    start_epoch, rows = 0, []
    stamps = store_stamps([*train_paths, *previous.values()])  # a cascade: its inputs' too
    val_stamps = store_stamps(val_paths)
    key = run_key({"train": stamps, "val": val_stamps, "plans": plans.raw}, cfg, RESUMABLE_KEYS)  # the dict, as ever
    state = resumable_checkpoint(ckpt_path, key, device, "its stores, split, plans or training settings differ")
    if state is not None:
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        start_epoch = int(state["epoch"])
        rows = json.loads(state["curve"])
        elapsed = float(state.get("elapsed_s") or 0.0)
        if budget is not None and state.get("budget_epochs") is not None:  # the schedule fitted before
            epochs = min(epochs, int(state["budget_epochs"]))
        log.info("resuming from %s at epoch %d", ckpt_path, start_epoch)
    model = net  # the bare network: what is saved, validated and loaded
    net = ddp.wrap(net, d)
    if d.enabled:
        log.info("DDP: %d processes (%s), global batch %d, %d per process", d.world, d.backend, batch,
                 batch // d.world)
    aug_cfg = AugmentConfig.from_dict(cfg.get("augment") or {})
    synthetic = None
    if aug_cfg.synthetic_modality_p > 0:
        from voxflow.synth.augment import SyntheticModality

        synthetic = SyntheticModality(cfg.get("synthesis_model"), aug_cfg.synthetic_modality_p, device, plans.dim)
    patch = plans.sampler_patch
    train_ds = PatchBatches(train_paths, patch, batch, cfg["fg_fraction"], plans.label_values,
                            seed=seed, centre_z=not plans.is_3d, rank=d.rank, world=d.world,
                            previous=[previous[p] for p in train_paths] if previous else None)
    train_ds.start = start_epoch * iters  # the batches of the trained steps are skipped, not redrawn
    loader = iter(make_loader(train_ds, int(cfg["workers"])))
    val_batches = _fixed_val_batches(val_paths or train_paths, patch, plans, cfg, seed, previous) if d.main else []
    seen = 0
    epoch = start_epoch
    while epoch < epochs:
        total_steps = epochs * iters
        net.train()
        t0, wait, losses = time.time(), 0.0, []
        bar = tqdm(range(iters), desc=f"epoch {epoch + 1}/{epochs}", disable=not progress, mininterval=5)
        for it in bar:
            tw = time.time()
            img, lab = next(loader)
            wait += time.time() - tw
            step = epoch * iters + it
            loss = train_step(net, opt, scaler, loss_fn, img, lab, plans, aug_cfg, device=device, seed=seed,
                              step=step, first=first, lr=poly_lr(cfg["lr"], step, total_steps), fmt=fmt, amp=amp,
                              synthetic=synthetic)
            seen += img.shape[0]
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        losses = ddp.mean_over_processes(losses, d)  # each process's loss is that of its slice
        epoch += 1
        if d.main:
            dice = _validate(model, val_batches, plans, device, amp)
        step_s = (time.time() - t0) / iters
        elapsed += time.time() - t0
        if budget is not None:  # every process decides alike: rank 0's pace, shared
            elapsed = ddp.mean_over_processes([elapsed], d)[0]
            if epoch == 1:  # measured once: a resumed run keeps the schedule fitted before (checkpoint)
                fitted = epochs_within_budget(budget, int(cfg["epochs"]), elapsed, epoch)
                if fitted != epochs:
                    log.info("train.budget_minutes=%s: %.1f s per epoch, so %d epochs (%d iterations) fit",
                             budget, elapsed / epoch, fitted, fitted * iters)
                epochs = fitted
            if epoch < epochs and over_budget(budget, elapsed):
                log.warning("train.budget_minutes=%s reached after %d of %d epochs (%.0f s): stopping here",
                            budget, epoch, epochs, elapsed)
                epochs = epoch
        if not d.main:  # rank 0 validates and writes; the others wait for it
            ddp.barrier(d)
            continue
        rows.append({"epoch": epoch, "train_loss": round(float(np.mean(losses)), 5),
                     "val_dice_fg": round(float(dice[0]), 5) if not math.isnan(dice[0]) else "",
                     "val_dice_mean": round(float(np.nanmean(dice[1:])), 5) if np.any(~np.isnan(dice[1:])) else "",
                     "lr": round(opt.param_groups[0]["lr"], 7), "it_per_s": round(1 / step_s, 3),
                     "data_wait_fraction": round(wait / (time.time() - t0), 3)})
        for group, value in zip(plans.regions or [], dice[1:]):  # region training: each region's Dice
            name = "val_dice_region_" + "_".join(map(str, group))
            rows[-1][name] = "" if math.isnan(value) else round(float(value), 5)
        log.info("epoch %d: %s", epoch, rows[-1])
        write_curve(rows, out_dir)
        if epoch % int(cfg["checkpoint_every"]) == 0 or epoch == epochs:
            save_checkpoint(ckpt_path, model=model.state_dict(), optimizer=opt.state_dict(),
                            scaler=scaler.state_dict(), epoch=epoch, curve=json.dumps(rows), world_size=d.world,
                            run_key=key, elapsed_s=elapsed if budget is not None else None,  # no clock without a budget
                            budget_epochs=epochs if budget is not None else None)
        ddp.barrier(d)
    if synthetic is not None:
        log.info("train.augment.synthetic_modality_p=%s: %d samples had a modality synthesized",
                 synthetic.p, synthetic.applied)
    final = out_dir / MODEL_FILE
    if d.main and start_epoch >= epochs:  # resumed after its last epoch (killed before the end): the curve again
        write_curve(rows, out_dir)
    if d.main:
        save_checkpoint(final, model=model.state_dict(), plans=json.dumps(plans.raw), curve=json.dumps(rows),
                        deep_supervision=bool(cfg["deep_supervision"]), world_size=d.world)
    return {"epochs": epochs, "final": str(final), "last": rows[-1] if rows else {},
            "step_losses": losses if start_epoch < epochs else [], "samples": seen, "rank": d.rank,
            "world_size": d.world}


def _fixed_val_batches(paths, patch, plans, cfg, seed, previous=None):
    """A fixed set of foreground-containing validation patches, so epochs are comparable."""
    n = int(cfg["val_patches"])
    if n <= 0:
        return []
    plans = Plans.of(plans)
    batch = max(1, plans.batch_size)
    ds = PatchBatches(paths, patch, batch_size=batch, fg_fraction=1.0, label_values=plans.label_values,
                      seed=seed + 1, centre_z=not plans.is_3d,
                      previous=[previous[p] for p in paths] if previous else None)
    it = iter(ds)
    return [next(it) for _ in range(max(1, n // batch))]


@torch.no_grad()
def _validate(net, batches, plans: Plans, device, amp) -> np.ndarray:
    """Pseudo-Dice per output: slot 0 the whole foreground and then one per class, or, with regions, one per
    region (the first, outermost one, e.g. whole tumour, standing for the foreground)."""
    from voxflow.training.regions import region_dice_stats, region_targets

    groups = plans.region_index_groups
    size = len(groups) + 1 if groups else plans.n_classes
    if not batches:
        return np.full(size, np.nan)
    net.eval()
    tp = fp = fn = np.zeros(size)
    for img, lab in batches:
        img, lab = to_network_input(img.to(device), lab.to(device), plans)
        img, lab = with_previous_stage(img, lab, plans)
        img = img.contiguous(memory_format=memory_format(plans))
        with torch.autocast(device.type, enabled=amp):
            logits = net(img)
        if groups:
            a, b, c = region_dice_stats(logits.float(), region_targets(lab[:, 0], groups))
            a, b, c = (np.concatenate([x[:1], x]) for x in (a, b, c))
        else:
            a, b, c = pseudo_dice(logits.float(), lab, plans.n_classes)
        tp, fp, fn = tp + a, fp + b, fn + c
    return _dice(tp, fp, fn)


