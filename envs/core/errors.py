"""One error base for the whole package.

Every error gigdispatch raises on purpose derives from ``GigdispatchError``; most also derive from
``ValueError`` (bad input: a scenario field, an action, a config key, a request, a file), so that
``except ValueError`` keeps working for callers who predate the base. The message is one line that
names the field or file and the reason. Anything else that escapes is a bug of ours.
"""

from __future__ import annotations


class GigdispatchError(Exception):
    """Base of every error gigdispatch raises on purpose (the message says what and why, in one line)."""


class InputError(GigdispatchError, ValueError):
    """Bad input from a user: a field, argument, file or request; the message names it and the reason."""
