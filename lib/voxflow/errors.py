"""The one exception of a subject's broken input, shared by the readers (voxflow.io, voxflow.formats) and the steps."""

from __future__ import annotations

import os


class InputError(Exception):
    """A problem with one subject's input, reported as a single line."""

    def __init__(self, subject: str, file: str | os.PathLike | None, problem: str):
        self.subject, self.file, self.problem = subject, str(file) if file else "-", problem
        super().__init__(f"subject={subject} file={self.file}: {problem}")
