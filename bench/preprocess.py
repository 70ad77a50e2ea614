"""Benchmark: the per-subject preprocessing chain on one demo subject at 1 mm.

Times each step in-process (the same functions the rules call), then, in the same run and on the
same input, antspyx's defaults back-to-back: `n4_bias_field_correction` with its defaults on every
MR modality and `registration(type_of_transform="Affine")` with its defaults to the 1 mm template.

The chain's quality scores (voxflow.qc.subject, issue 13) are computed as the steps compute them, inside coreg and
N4 and after skull stripping and MNI, and timed on their own: scoring_pct is their share of the chain without them.

Prints one final line:
  preprocess per_subject_s=<x> antspy_defaults_s=<x> ratio=<x> mask_dice=<x> reg_dice=<x> scoring_s=<x>
  scoring_pct=<x>
Targets: per_subject_s <= 30 on 2 cores, ratio >= 2.5, mask_dice >= 0.95, reg_dice >= 0.95, scoring_pct <= 10.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", str(os.cpu_count() or 2))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scale", type=float, default=1.0, help="demo spacing scale (1.0 = t1 at 1x1x1.5 mm)")
    ap.add_argument("--resolution", type=int, default=1, help="MNI template resolution in mm")
    ap.add_argument("--index", type=int, default=0)
    args = ap.parse_args()

    import ants

    from voxflow.demo.mri import generate_subject
    from voxflow.preprocess import coreg, ingest, mni, n4, skullstrip
    from voxflow.core.metrics import dice
    from voxflow.preprocess.normalize import zscore
    from voxflow.qc.subject import Timer, mask_quality
    from voxflow.preprocess.steps import write_mni_scores

    mods = ["t1", "t2", "flair"]
    tmp = Path(tempfile.mkdtemp(prefix="voxflow-bench-"))
    generate_subject("bench", args.index, tmp / "raw", tmp / "truth", modalities=mods, spacing_scale=args.scale)
    raw = {m: str(tmp / "raw" / "bench" / f"{m}.nii.gz") for m in mods}
    w = tmp / "work"
    w.mkdir()
    times: dict[str, float] = {}

    def timed(name, fn, *a, **k):
        t0 = time.perf_counter()
        out = fn(*a, **k)
        times[name] = time.perf_counter() - t0
        return out

    p = lambda step, m: str(w / f"{step}_{m}.nii")  # as the workflow: float intermediates uncompressed  # noqa: E731
    timed("ingest", ingest.ingest_subject, "bench", raw, {m: p("ingest", m) for m in mods}, "t1")
    coreg_scores: dict = {}
    n4_scores: dict = {}
    timed("coreg", coreg.coregister_subject, "bench", {m: p("ingest", m) for m in mods}, "t1",
          {m: p("coreg", m) for m in mods}, {m: str(w / f"{m}.mat") for m in mods if m != "t1"}, scores=coreg_scores)
    timed("n4", n4.correct_subject, {m: p("coreg", m) for m in mods}, {m: p("n4", m) for m in mods},
          {m: p("field", m) for m in mods}, {}, 6.0, (20, 10), 100.0, scores=n4_scores)
    strip_qc: dict = {}
    timed("skullstrip", skullstrip.strip_subject, {m: p("n4", m) for m in mods}, "t1",
          {m: p("brain", m) for m in mods}, str(w / "mask.nii.gz"), "deepbet", threads=os.cpu_count() or 2,
          qc=strip_qc)
    with Timer() as mask_timer:
        mask_quality(strip_qc["mask"], strip_qc["spacing_zyx"])
    tpl, tpl_mask = str(w / "tpl.nii.gz"), str(w / "tpl_mask.nii.gz")
    tissue = {k: str(w / f"tpl_{k}.nii.gz") for k in ("gm", "wm")}
    mni.write_template(args.resolution, tpl, tpl_mask, tissue["gm"], tissue["wm"])
    mni_qc: dict = {}
    timed("mni", mni.register_subject, {m: p("brain", m) for m in mods}, "t1", str(w / "mask.nii.gz"), None, tpl,
          {m: p("mni", m) for m in mods}, str(w / "mni_mask.nii.gz"), None, str(w / "xfm"), "affine", qc=mni_qc)
    t0 = time.perf_counter()
    mni_scoring = write_mni_scores(str(w / "mni_scores.json"), mni_qc, "t1",
                                   {"mask": tpl_mask, "gm": tissue["gm"], "wm": tissue["wm"]})
    times["mni"] += time.perf_counter() - t0
    scoring = (coreg_scores.get("seconds", 0.0) + n4_scores.get("seconds", 0.0) + mask_timer.seconds
               + mni_scoring)

    def _norm():
        mask = ants.image_read(str(w / "mni_mask.nii.gz")).numpy()
        return [zscore(ants.image_read(p("mni", m)).numpy(), mask) for m in mods]

    timed("normalize", _norm)
    per_subject = sum(times.values())

    # antspyx defaults, same input, back to back
    t0 = time.perf_counter()
    for m in mods:
        ants.n4_bias_field_correction(ants.image_read(p("coreg", m)))
    ants.registration(fixed=ants.image_read(tpl), moving=ants.image_read(p("brain", "t1")), type_of_transform="Affine")
    defaults = time.perf_counter() - t0

    ours = ants.image_read(str(w / "mask.nii.gz"))
    truth = ants.resample_image_to_target(ants.image_read(str(tmp / "truth" / "bench_brainmask.nii.gz")), ours,
                                          interp_type="nearestNeighbor")
    m_dice = dice(ours.numpy() > 0, truth.numpy() > 0)
    r_dice = dice(ants.image_read(str(w / "mni_mask.nii.gz")).numpy() > 0, ants.image_read(tpl_mask).numpy() > 0)
    for k, v in times.items():
        print(f"  {k:<11s} {v:6.2f} s", file=sys.stderr)
    print(f"  antspy defaults (N4 x{len(mods)} + Affine) {defaults:.2f} s", file=sys.stderr)
    parts = {"coreg": coreg_scores.get("seconds", 0.0), "n4": n4_scores.get("seconds", 0.0),
             "skullstrip": mask_timer.seconds, "mni": mni_scoring}
    print(f"  quality scores {scoring:.2f} s (inside the steps above: "
          f"{', '.join(f'{k} {v:.2f}' for k, v in parts.items())})", file=sys.stderr)
    print(f"preprocess per_subject_s={per_subject:.2f} antspy_defaults_s={defaults:.2f} "
          f"ratio={defaults / per_subject:.2f} mask_dice={m_dice:.4f} reg_dice={r_dice:.4f} "
          f"scoring_s={scoring:.2f} scoring_pct={100 * scoring / (per_subject - scoring):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
