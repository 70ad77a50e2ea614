"""voxflow's two exceptions: a subject's broken input (InputError, shared by the readers and the steps) and a
mistake of the config (ConfigError, one `config error at '<key>': ...` line each)."""

from __future__ import annotations

import os


class InputError(Exception):
    """A problem with one subject's input, reported as a single line."""

    def __init__(self, subject: str, file: str | os.PathLike | None, problem: str):
        self.subject, self.file, self.problem = subject, str(file) if file else "-", problem
        super().__init__(f"subject={subject} file={self.file}: {problem}")


class ConfigError(ValueError):
    """A mistake of the config or of the input layout it describes: one line per problem."""
