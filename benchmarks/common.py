"""Shared output of the benchmark scripts: JSON on stdout, and atomically to ``--out`` when given."""

from __future__ import annotations

import json
from typing import Any


def emit(result: dict[str, Any], out: str | None) -> int:
    text = json.dumps(result, indent=2)
    print(text)  # first: a result is never lost to an unwritable --out
    if out:
        from gigdispatch.training.io import atomic_write_text

        atomic_write_text(out, text + "\n")  # its folder must exist
    return 0
