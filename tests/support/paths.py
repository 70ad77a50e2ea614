"""The project the tests run against: its root, the config schema, the real-data folder, the interpreter's bin."""

from __future__ import annotations

import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]  # tests/support/paths.py -> the repository root
SHARED_DATA = PROJECT / ".." / "shared" / "data"
SCHEMA = PROJECT / "lib" / "voxflow" / "settings" / "config.schema.yaml"  # package data
VENV_BIN = Path(sys.executable).parent
