"""Command line: `voxflow step NAME ...` (called by the rules; NAME -> function: voxflow.pipeline.registry) and the
user-facing commands (validate, where, predict, export-model). Argument parsing only: each command is a function of
a stage package."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys


def _run_step(args) -> int:
    from voxflow.pipeline.registry import run_step

    return run_step(args.name, args.subject, json.loads(args.io), args.threads)


def _where(args) -> int:
    from voxflow.core.layout import output_folders
    from voxflow.errors import ConfigError
    from voxflow.settings.loader import read_config_file

    try:
        out = read_config_file(args.configfile).get("output_dir", "results")
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"voxflow outputs are under {os.path.abspath(out)}/:")
    for sub, what in output_folders():
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
