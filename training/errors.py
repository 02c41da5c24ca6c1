"""Errors of the training layer. Every one derives from ``GigdispatchError`` (``envs/core/errors.py``), most
via ``InputError`` (bad input: the message names the option, field or path and the reason, in one line).

``gigdispatch`` (``training/cli.py``) shows an ``InputError`` or a ``CliError`` as one ``error: ...`` line
with exit status 2; the commands raise them without importing the CLI.
"""

from __future__ import annotations

from gigdispatch.envs.core.errors import GigdispatchError, InputError

__all__ = ["CliError", "GigdispatchError", "InputError", "TrainError"]


class CliError(GigdispatchError):
    """An error a command shows the user as one line (no traceback), exit status 2."""


class TrainError(InputError):
    """Bad input to ``train`` (run folder, resume folder); one line, naming what is wrong."""
