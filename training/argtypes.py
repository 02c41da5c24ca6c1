"""argparse value types shared by the ``gigdispatch`` subcommands (one-line errors naming the value)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from gigdispatch.envs.core.seeding import SeedError, parse_seeds


def whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse ``type`` accepting whole numbers >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {v}")
        return v

    parse.__name__ = f"whole number >= {minimum}"
    return parse


def seed_list(text: str) -> list[int]:
    """An argparse ``type`` for seed lists (``0-19``, ``0,3,7``, ``0-4,10-14``: ``parse_seeds``)."""
    try:
        return parse_seeds(text)
    except SeedError as exc:
        reason = str(exc).removeprefix(f"--seeds {text!r}: ").removeprefix("--seeds: ")
        raise argparse.ArgumentTypeError(reason) from None


def add_progress_flags(p: argparse.ArgumentParser) -> None:
    """``--progress`` / ``--no-progress`` (``args.progress``: True, False, or None for "on a terminal only")."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--progress", dest="progress", action="store_true", default=None, help="always show a progress bar")
    g.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="never show a progress bar (default: on a terminal only)",
    )
