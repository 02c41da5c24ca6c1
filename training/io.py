"""Atomic writes: results and checkpoints appear whole or not at all; nothing already written is lost.

The writers are those of ``gigdispatch.envs.core.atomic`` (one implementation for every layer: files get
the mode the umask gives, and a missing folder is refused, never created); this module adds JSON.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from gigdispatch.envs.core.atomic import atomic_write_bytes, atomic_write_text, check_out_file, ensure_out_dir

__all__ = [
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_out_file",
    "ensure_out_dir",
    "json_safe",
]


def json_safe(value: Any) -> Any:
    """NaN and infinities become null (JSON has neither); numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(json_safe(obj), indent=2, sort_keys=False) + "\n")
