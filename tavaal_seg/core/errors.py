"""The bad-input exception family: what the tools report as exit code 2.

An input check (a config key, a data file, a weights file, a run directory, a launcher
variable) raises one of these with a message that names the input and says what was expected.
Anything else that escapes a run is a bug or an internal failure (exit code 1, traceback in
``run.log``): a ``ValueError`` raised inside torch is *not* bad input. The classes also derive
from the built-in type their check used to raise (``ValueError``, ``FileNotFoundError``), so
library code that catches those keeps working.

This module imports nothing, so every other module may import it.
"""
from __future__ import annotations


class BadInput(Exception):
    """Something the user gave is wrong; the message names it and says what was expected."""


class ConfigError(BadInput, ValueError):
    """A config value or key is wrong; the message says which and what was expected."""


class DataError(BadInput, ValueError):
    """A data file or layout is wrong (undecodable image, mask values, duplicate ids, ...)."""


class InputNotFound(BadInput, FileNotFoundError):
    """A file or folder the config or data layout names is not there; the message says where it was
    looked for and what belongs there."""


class WeightsError(BadInput, ValueError):
    """A weights file does not fit the model, or pretrained weights cannot be fetched."""


class RunDirError(BadInput, RuntimeError):
    """The run directory cannot be used as asked (exists without --resume, other config, ...)."""


def internal_error_message(prog: str, err: BaseException, where: str) -> str:
    """The one terminal line of an internal error (exit code 1) whose traceback went to ``where``."""
    first = (str(err).strip().splitlines() or [""])[0]
    return (f"{prog}: internal error: {type(err).__name__}: {first[:300]} (not a problem with your input; the full "
            f"traceback is in {where})")


def user_message(err: BaseException) -> str:
    """The message to show for ``err``. A DataLoader worker's error is re-raised in the main
    process as the same type with the worker's whole traceback as its message; the user needs
    only the original message, which the traceback ends with."""
    text = str(err)
    if text.startswith("Caught ") and "\nOriginal Traceback" in text:
        marker = f"{type(err).__name__}: "
        cut = text.rfind(marker)
        if cut >= 0:
            return text[cut + len(marker):].strip()
    return text
