"""Errors raised for bad scenarios: each message names the file or field and the reason."""


class ScenarioError(ValueError):
    """A scenario name, file or field that cannot be used; the message says which and why."""
