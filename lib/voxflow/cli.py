"""Command line: `voxflow step NAME ...` (called by the rules; NAME -> function: voxflow.pipeline.registry) and the
user-facing commands (validate, where, predict, export-model)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

log = logging.getLogger("voxflow")


def _run_step(args) -> int:
    from voxflow.errors import InputError, error_line, failed_step, one_line
    from voxflow.pipeline.registry import step_function

    spec = json.loads(args.io)
    fn = step_function(args.name)
    t0 = time.time()
    log.info("step %s subject=%s threads=%d", args.name, args.subject, args.threads)
    try:
        info = fn(args.subject, spec.get("input", {}), spec.get("output", {}), spec.get("config", {}), args.threads)
    except InputError as exc:
        # One line, last in the log, that names subject, file and problem (the step: a chain's that failed).
        print(error_line(exc.step or args.name, str(exc)), file=sys.stderr)
        return 2
    except Exception as exc:  # anything else: traceback first (log.exception), then the one line
        log.exception("step %s failed", args.name)
        step, cause = failed_step(exc, args.name)
        print(error_line(step, f"subject={args.subject}: {one_line(cause)}"), file=sys.stderr)
        return 1
    log.info("done %s subject=%s in %.1fs: %s", args.name, args.subject, time.time() - t0,
             json.dumps(info, default=str)[:2000] if info else "")
    return 0


def _where(args) -> int:
    import yaml

    cfg = yaml.safe_load(open(args.configfile))
    out = cfg.get("output_dir", "results")
    print(f"voxflow outputs are under {os.path.abspath(out)}/:")
    for sub, what in [("report", "report.html: the cohort report (self-contained, opens offline)"),
                      ("evaluation", "metrics.tsv (per subject, label, space), summary.tsv (mean, std, median, IQR)"),
                      ("predictions", "<subject>/<subject>_seg.nii.gz: predictions in native space (+ _seg_mni, "
                                      "or _seg_resampled in native-space runs: on the stores' grid)"),
                      ("model", "plans.json, fingerprint.json, split.json, fold_<k>/ (model, curve.csv/png)"),
                      ("zarr", "per-subject zarr stores (OME-Zarr)"),
                      ("qc", "QC images and scores.json per subject and step; scores.tsv, flags.tsv (cohort QC)"),
                      ("preprocess", "intermediate NIfTI per step, transforms in <subject>/xfm"),
                      ("logs", "one log per rule and subject"), ("benchmarks", "run time per rule and subject")]:
        print(f"  {out}/{sub}/  {what}")
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    p = argparse.ArgumentParser(prog="voxflow", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("step", help="run one per-subject step (used by the Snakemake rules)")
    s.add_argument("name")
    s.add_argument("--subject", required=True)
    s.add_argument("--io", required=True, help="JSON: {input: {...}, output: {...}, config: {...}}")
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(func=_run_step)
    w = sub.add_parser("where", help="print where the outputs of a run are")
    w.add_argument("--configfile", default="config/config.yaml")
    w.set_defaults(func=_where)
    from voxflow.model_sharing.predict import add_parsers as add_predict_parsers
    from voxflow.settings.command import add_parser as add_validate_parser

    add_validate_parser(sub)
    add_predict_parsers(sub)
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
