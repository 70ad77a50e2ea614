"""`python -m voxflow ...`: what the rules run, with the interpreter that runs Snakemake, so that a rule
finds the project's own entry point whatever the user's PATH holds."""

import sys

from voxflow.cli import main

sys.exit(main())
