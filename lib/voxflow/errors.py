"""voxflow's exceptions and their one-line forms: a subject's broken input (InputError, shared by the readers and
the steps), a chain's step that failed otherwise (StepError: the step and the exception), and a mistake of the
config (ConfigError, one `config error at '<key>': ...` line each). Every `voxflow ERROR` / `voxflow EXCLUDED` line
and status file words a failure with the functions here."""

from __future__ import annotations

import os


def subject_problem(subject: str, file: str, problem: str) -> str:
    """A subject's problem as one line: `subject=<subject> file=<file>: <problem>`."""
    return f"subject={subject} file={file}: {problem}"


def first_line(exc: BaseException, limit: int | None = 300) -> str:
    """The first line of an exception's message ("" for none), at most `limit` characters."""
    return (str(exc).strip().splitlines() or [""])[0][:limit]


def one_line(exc: BaseException, strip: bool = True) -> str:
    """An exception that is not an InputError as one line: its type and its message's first line
    (`ValueError: bad shape`; the type alone for an empty message). `strip=False`: the line `voxflow step` has
    always printed, `ValueError: ` for an empty message, a trailing colon kept."""
    line = f"{type(exc).__name__}: {first_line(exc)}"
    return line.rstrip(": ") if strip else line


def error_line(step: str, message: str) -> str:
    """The line a failed step or subject ends its log with: `voxflow ERROR [<step>] <message>`."""
    return f"voxflow ERROR [{step}] {message}"


class InputError(Exception):
    """A problem with one subject's input, reported as a single line. `step`: the step of a subject's chain it
    stopped (voxflow.pipeline.chain.run_chain records it, see at_step); None where no chain ran it."""

    def __init__(self, subject: str, file: str | os.PathLike | None, problem: str, step: str | None = None):
        self.subject, self.file, self.problem, self.step = subject, str(file) if file else "-", problem, step
        super().__init__(subject_problem(subject, self.file, problem))


class StepError(Exception):
    """A step of a subject's chain failed with an exception other than an InputError: the step, and the exception
    (`cause`, also `__cause__`: a StepError is raised from it). Its message is the cause's."""

    def __init__(self, step: str, cause: Exception):
        self.step, self.cause = step, cause
        super().__init__(str(cause))


def at_step(exc: Exception, step: str) -> Exception:
    """The exception a chain's step `step` raised, with the step recorded and the exception itself left as it was:
    an InputError as a copy with its step, anything else in a StepError. One that already names a step (a chain run
    inside a step) is returned as it is: the innermost step is the one that failed."""
    if isinstance(exc, StepError) or (isinstance(exc, InputError) and exc.step):
        return exc
    if isinstance(exc, InputError):
        return InputError(exc.subject, exc.file, exc.problem, step)
    return StepError(step, exc)


def failed_step(exc: Exception, default: str) -> tuple[str, Exception]:
    """(the step, the exception it raised) of a failure that at_step recorded; (`default`, exc) for any other."""
    if isinstance(exc, StepError):
        return exc.step, exc.cause
    if isinstance(exc, InputError) and exc.step:
        return exc.step, exc
    return default, exc


class ConfigError(ValueError):
    """A mistake of the config or of the input layout it describes: one line per problem."""
