"""Train a missing-modality synthesis GAN on a cohort's complete subjects (their zarr stores).

One generator for every missing pattern (CollaGAN): each sample of a batch drops a random non-empty, non-full
set of modalities (mostly exactly one), the generator sees the others plus the availability flags and predicts
every modality. Loss: L1 inside the brain mask (the dropped channels weighted up) + a conditional 3D PatchGAN.

Resumable like :func:`voxflow.training.train.train_fold`: ``checkpoint.pt`` (both networks, both optimizers, the
step, the curve) is written atomically every ``checkpoint_every`` steps, and a rerun continues from it; the
patch stream and the availability draws depend only on (seed, step), so a resumed run ends with the same
generator as an uninterrupted one. Under torchrun (WORLD_SIZE > 1) G and D are wrapped in DDP, each process
trains on its slice of every global batch, and only rank 0 validates and writes.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from voxflow.core.atomic import atomic_path
from voxflow.core.layout import CURVE_CSV_FILE, GENERATOR_FILE, SYNTHESIS_CHECKPOINT_FILE, SYNTHESIS_SUMMARY_FILE
from voxflow.nn import ddp
from voxflow.nn.sampler import PatchBatches, Store, _window, choose_start, make_loader, read_patch
from voxflow.nn.checkpoints import (pick_device, poly_lr, resumable_checkpoint, run_key, sample_generator,
                                    save_checkpoint, store_stamps)
from voxflow.synth import metrics
from voxflow.synth.model import (ADVERSARIAL, PatchDiscriminator3d, build_generator, discriminator_loss,
                                 generator_adversarial_loss, generator_input, random_availability,
                                 reconstruction_loss)
from voxflow.core.atomic import write_json_atomic

log = logging.getLogger("voxflow.synth")

DEFAULTS: dict = {
    "patch_size": [32, 32, 32], "batch_size": 2, "iterations": 800, "base_features": 16, "n_stages": None,
    "lr": 2e-3, "l1_weight": 100.0, "adversarial_weight": 1.0, "adversarial": "lsgan", "missing_weight": None,
    "disc_features": 16, "disc_layers": 3, "seed": 0, "device": "auto", "ddp_backend": "auto",
    "checkpoint_every": 50, "val_every": 50, "log_every": 10, "val_patches": 4, "budget_minutes": None,
    "val_fraction": 0.2, "workers": 0, "stop_after": None,
}
# settings that do not change what a resumed run computes (how it runs, when it writes, how long it goes on)
RESUMABLE_KEYS = frozenset({"device", "ddp_backend", "checkpoint_every", "val_every", "log_every", "budget_minutes",
                            "workers", "stop_after", "iterations"})
CL = torch.channels_last_3d


def resolve_config(cfg: dict | None) -> dict:
    """`cfg` over :data:`DEFAULTS`; unknown keys (the workflow's own settings) are dropped with a warning."""
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        log.warning("synthesis settings %s are not training settings: ignored (known: %s)", unknown, sorted(DEFAULTS))
    out = {**DEFAULTS, **{k: v for k, v in cfg.items() if k in DEFAULTS}}
    out["patch_size"] = [int(p) for p in out["patch_size"]]
    if out["adversarial"] not in ADVERSARIAL:
        raise ValueError(f"adversarial must be one of {ADVERSARIAL}, got {out['adversarial']!r}")
    return out


def split_stores(paths: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, validation): round(n * val_fraction) stores held out, at least 1 and at most n - 1 (n >= 2);
    a single store is both."""
    if len(paths) < 2:
        return list(paths), list(paths)
    n_val = min(len(paths) - 1, max(1, round(len(paths) * float(val_fraction))))
    order = np.random.default_rng(seed).permutation(len(paths))
    val = sorted(paths[i] for i in order[:n_val])
    return [p for p in paths if p not in val], val


def subject_of(path: str) -> str:
    return Path(path).name.removesuffix(".zarr")


class SynthPatches(PatchBatches):
    """(image (B,M,*patch) float32, brain mask (B,1,*patch) float32) batches, centred on brain voxels; batch k
    drawn from its own generator seeded by (seed, k), as :class:`PatchBatches` (so `start` resumes)."""

    def __init__(self, paths, patch, batch_size: int, seed: int = 0, rank: int = 0, world: int = 1):
        super().__init__(paths, patch, batch_size, fg_fraction=0.0, seed=seed, rank=rank, world=world)

    def __iter__(self):
        from voxflow.core.stores import read_store_mask

        stores = [Store(p).open() for p in self.paths]
        masks = [np.asarray(read_store_mask(p)) for p in self.paths]
        centres = [np.argwhere(m[::4, ::4, ::4] > 0) * 4 for m in masks]  # subsampled: bounded memory
        for k in self._batch_indices():
            rng = np.random.default_rng([self.seed, k])
            imgs, msks = [], []
            for i in range(self.batch_size):
                s = int(rng.integers(len(stores)))
                c = centres[s][int(rng.integers(len(centres[s])))] if len(centres[s]) else None
                start = choose_start(stores[s].shape, self.patch, rng, c)
                if i not in self.mine:
                    continue
                imgs.append(read_patch(stores[s], start, self.patch)[0])
                sl, pad = _window(start, self.patch, stores[s].shape)
                msks.append(np.pad(masks[s][sl] > 0, pad).astype(np.float32)[None])
            yield torch.from_numpy(np.stack(imgs)), torch.from_numpy(np.stack(msks))


def _store_meta(paths: list[str]) -> tuple[list[str], list[float]]:
    from voxflow.core.stores import store_meta

    metas = [store_meta(p) for p in paths]
    mods = list(metas[0]["modalities"])
    for p, m in zip(paths, metas):
        if list(m["modalities"]) != mods:
            raise ValueError(f"{p} has modalities {m['modalities']}, {paths[0]} has {mods}: one model needs one set")
    return mods, [float(s) for s in metas[0]["spacing_zyx"]]


def _run_key(train: list[str], val: list[str], cfg: dict) -> str:
    return run_key({"stores": store_stamps([*train, *val]), "n_train": len(train)}, cfg, RESUMABLE_KEYS)


def train_synthesis(store_paths: list[str], cfg: dict, out_dir: str | Path, progress: bool = False) -> dict:
    """Train (or resume) the synthesis GAN; writes in `out_dir` checkpoint.pt, curve.csv, synthesis.json and,
    last, generator.pt. Returns {"step", "stopped", "generator", "validation", "train_subjects", "val_subjects"}.

    cfg (all optional): patch_size [32,32,32] (needs >= 3 U-Net stages: >= 32 per isotropic axis);
    batch_size 2 (global, over DDP processes); iterations 800; base_features 16 and n_stages None (generator);
    lr 2e-3 (Adam, betas 0.5/0.999, G and D, poly decay; pix2pix's 2e-4 left FLAIR at MAE 0.60 after 300 demo
    iterations, no better than zeros, 2e-3 at 0.33); l1_weight 100; adversarial_weight 1;
    adversarial "lsgan" | "hinge"; missing_weight None (= number of modalities: weight of the dropped channels
    in the L1); disc_features 16, disc_layers 3; seed 0; device "auto"; ddp_backend "auto"; checkpoint_every 50;
    val_every 50 (validation MAE/PSNR per modality on val_patches 4 fixed patches, each modality dropped alone);
    log_every 10 (curve rows: mean losses); budget_minutes None (stop, and finish, once the training time
    exceeds it); val_fraction 0.2 (stores held out: >= 1 with >= 2 stores, else the training store);
    workers 0 (DataLoader processes); stop_after None (test hook: return after that step as if killed)."""
    cfg = resolve_config(cfg)
    d = ddp.setup(pick_device(cfg["device"]), cfg["ddp_backend"])
    info = _train([str(p) for p in store_paths], cfg, Path(out_dir), d, progress and d.main)
    ddp.teardown(d)  # not on an error: a process that fails exits, and torchrun stops the others
    return info


def _train(paths: list[str], cfg: dict, out_dir: Path, d: ddp.Dist, progress: bool) -> dict:
    from tqdm import tqdm

    if not paths:
        raise ValueError("train_synthesis needs at least one store")
    device, batch, seed = d.device, int(cfg["batch_size"]), int(cfg["seed"])
    if batch % d.world:
        raise ValueError(f"batch_size {batch} cannot be split over {d.world} processes")
    local, first = batch // d.world, d.rank * (batch // d.world)
    out_dir.mkdir(parents=True, exist_ok=True)
    mods, spacing = _store_meta(paths)
    m = len(mods)
    mw = float(cfg["missing_weight"] or m)
    train_paths, val_paths = split_stores(paths, cfg["val_fraction"], seed)
    patch, kind = cfg["patch_size"], cfg["adversarial"]
    torch.manual_seed(seed)
    g_net = build_generator(m, patch, int(cfg["base_features"]), cfg["n_stages"], spacing)
    g_net = g_net.to(device, memory_format=CL)  # type: ignore[call-overload]
    d_net = PatchDiscriminator3d(3 * m, int(cfg["disc_features"]), int(cfg["disc_layers"]))
    d_net = d_net.to(device, memory_format=CL)  # type: ignore[call-overload]
    opt_g = torch.optim.Adam(g_net.parameters(), lr=cfg["lr"], betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d_net.parameters(), lr=cfg["lr"], betas=(0.5, 0.999))
    ckpt, key = out_dir / SYNTHESIS_CHECKPOINT_FILE, _run_key(train_paths, val_paths, cfg)
    step, rows, pending, elapsed = 0, [], [], 0.0
    state = resumable_checkpoint(ckpt, key, device, "stores or settings differ", log)
    if state is not None:
        g_net.load_state_dict(state["generator"])
        d_net.load_state_dict(state["discriminator"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        torch.set_rng_state(state["rng"].cpu())
        step, elapsed = int(state["step"]), float(state["elapsed_s"])
        rows, pending = json.loads(state["curve"]), json.loads(state["pending"])
        log.info("resuming synthesis training from %s at step %d", ckpt, step)
    g, dnet = ddp.wrap(g_net, d), ddp.wrap(d_net, d)
    ds = SynthPatches(train_paths, patch, batch, seed, d.rank, d.world)
    ds.start = step
    loader = iter(make_loader(ds, int(cfg["workers"])))
    val_batches = _fixed_patches(val_paths, patch, int(cfg["val_patches"]), seed) if d.main else []
    iters, budget = int(cfg["iterations"]), cfg["budget_minutes"]
    bar = tqdm(total=iters, initial=step, desc="synthesis", disable=not progress, mininterval=5)
    stopped = False
    while step < iters:
        t0 = time.time()
        img, mask = (t.to(device, non_blocking=True).contiguous(memory_format=CL) for t in next(loader))
        avail = random_availability(batch, m, sample_generator(seed, step, 0, torch.device("cpu")))
        avail = avail[first:first + local].to(device)
        for opt in (opt_g, opt_d):
            for group in opt.param_groups:
                group["lr"] = poly_lr(cfg["lr"], step, iters)
        x = generator_input(img, avail)
        fake = g(x)
        comp = torch.where(avail[:, :, None, None, None], img, fake)  # what synthesize returns
        opt_d.zero_grad(set_to_none=True)
        scores = dnet(torch.cat([torch.cat([x, img], 1), torch.cat([x, comp.detach()], 1)], 0))
        loss_d = discriminator_loss(kind, scores[:local], scores[local:])
        loss_d.backward()
        opt_d.step()
        opt_g.zero_grad(set_to_none=True)
        adv = generator_adversarial_loss(kind, dnet(torch.cat([x, comp], 1)))
        l1 = reconstruction_loss(fake, img, mask, avail, mw)
        (cfg["l1_weight"] * l1 + cfg["adversarial_weight"] * adv).backward()
        opt_g.step()
        step += 1
        bar.update(1)
        pending.append([float(l1.detach()), float(adv.detach()), float(loss_d.detach())])
        elapsed += time.time() - t0
        if cfg["stop_after"] is not None and step >= int(cfg["stop_after"]) and step < iters:
            stopped = True  # the test hook of a kill: nothing more is written
            break
        over = budget is not None and ddp.mean_over_processes([elapsed], d)[0] >= float(budget) * 60.0
        if over and step < iters:
            log.warning("synthesis budget_minutes=%s reached at step %d of %d: stopping", budget, step, iters)
        end = over or step == iters
        if step % int(cfg["log_every"]) == 0 or step % int(cfg["val_every"]) == 0 or end:
            means = ddp.mean_over_processes([float(v) for v in np.mean(pending, axis=0)], d)
            row = {"step": step, "loss_g_l1": round(means[0], 6), "loss_g_adv": round(means[1], 6),
                   "loss_d": round(means[2], 6), "lr": round(poly_lr(cfg["lr"], step - 1, iters), 8)}
            pending = []
            if d.main and (step % int(cfg["val_every"]) == 0 or end):
                row.update(_validate_patches(g_net, val_batches, mods, device))
            rows.append(row)
        if d.main and (step % int(cfg["checkpoint_every"]) == 0 or end):
            save_checkpoint(ckpt, generator=g_net.state_dict(), discriminator=d_net.state_dict(),
                            opt_g=opt_g.state_dict(), opt_d=opt_d.state_dict(), step=step, run_key=key,
                            rng=torch.get_rng_state(), elapsed_s=elapsed, curve=json.dumps(rows),
                            pending=json.dumps(pending), world_size=d.world)
            _write_curve(rows, mods, out_dir / CURVE_CSV_FILE)
        ddp.barrier(d)
        if over:
            break
    bar.close()
    info = {"step": step, "stopped": stopped, "generator": str(out_dir / GENERATOR_FILE),
            "train_subjects": [subject_of(p) for p in train_paths], "val_subjects": [subject_of(p) for p in val_paths],
            "validation": {}}
    if stopped or not d.main:
        return info
    meta = {"config": cfg, "modalities": mods, "patch_size": list(patch), "base_features": int(cfg["base_features"]),
            "n_modalities": m, "n_stages": cfg["n_stages"], "spacing": spacing}
    info["validation"] = validate_volumes(g_net, meta, val_paths, device)
    _write_curve(rows, mods, out_dir / CURVE_CSV_FILE)
    summary = {**{k: info[k] for k in ("train_subjects", "val_subjects", "validation", "step")},
               "config": cfg, "modalities": mods, "spacing": spacing, "iterations_done": step}
    write_json_atomic(summary, out_dir / SYNTHESIS_SUMMARY_FILE, default=str)
    save_checkpoint(out_dir / GENERATOR_FILE, state_dict=g_net.state_dict(), **meta)
    return info


def _fixed_patches(paths: list[str], patch, n: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if n <= 0:
        return []
    it = iter(SynthPatches(paths, patch, 1, seed=seed + 1))
    return [next(it) for _ in range(n)]


@torch.no_grad()
def _validate_patches(net: torch.nn.Module, batches, mods: list[str], device) -> dict:
    """Per modality, mean MAE and PSNR (inside the brain mask) of that modality dropped alone."""
    net.eval()
    out: dict[str, float] = {}
    for c, mod in enumerate(mods):
        maes, psnrs = [], []
        for img, mask in batches:
            avail = torch.ones(img.shape[:2], dtype=torch.bool)
            avail[:, c] = False
            pred = net(generator_input(img, avail).to(device).contiguous(memory_format=CL)).float().cpu()
            msk = mask[0, 0].numpy() > 0
            if msk.any():
                maes.append(metrics.mae(img[0, c].numpy(), pred[0, c].numpy(), msk))
                psnrs.append(metrics.psnr(img[0, c].numpy(), pred[0, c].numpy(), msk))
        out[f"val_mae_{mod}"] = round(float(np.mean(maes)), 6) if maes else float("nan")
        out[f"val_psnr_{mod}"] = round(float(np.mean(psnrs)), 4) if psnrs else float("nan")
    net.train()
    return out


def validate_volumes(net: torch.nn.Module, meta: dict, paths: list[str], device) -> dict:
    """Per modality, the mean over `paths` of psnr, ssim and mae of that modality dropped alone, on the whole
    volume inside its brain mask (:func:`voxflow.synth.infer.synthesize`); mae_zero_filled: a zero image's."""
    from voxflow.core.stores import read_subject_store
    from voxflow.synth.infer import synthesize

    mods = meta["modalities"]
    acc: dict[str, dict[str, list[float]]] = {mod: {} for mod in mods}
    for p in paths:
        s = read_subject_store(p)
        img, mask = np.asarray(s["image"], np.float32), np.asarray(s["mask"]) > 0
        for c, mod in enumerate(mods):
            avail = [i != c for i in range(len(mods))]
            syn = synthesize(img, avail, net, meta, device=device, mask=mask)[c]
            for name, value in (("psnr", metrics.psnr(img[c], syn, mask)), ("ssim", metrics.ssim3d(img[c], syn, mask)),
                                ("mae", metrics.mae(img[c], syn, mask)),
                                ("mae_zero_filled", metrics.mae(img[c], np.zeros_like(syn), mask))):
                acc[mod].setdefault(name, []).append(value)
    return {mod: {k: float(np.mean(v)) for k, v in vals.items()} for mod, vals in acc.items()}


def _write_curve(rows: list[dict], mods: list[str], path: Path) -> None:
    fields = ["step", "loss_g_l1", "loss_g_adv", "loss_d", "lr"]
    fields += [f"val_{k}_{mod}" for mod in mods for k in ("mae", "psnr")]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, restval="")
        w.writeheader()
        w.writerows(rows)
