"""A sweep's journal: every finished task's result, one JSON line each, written as the results arrive.

``gigdispatch evaluate`` (``episodes.jsonl``) and ``gigdispatch mdrp`` (``instances.jsonl``) append a line to the
journal in ``--out`` for every task as soon as it is done (flushed and fsynced, so a line that is there survives a
kill or a power cut), and a sweep started again with the same ``--out`` takes the tasks it finds there instead of
running them again. A line is keyed by the task itself (the policy, scenario, seed ... the worker was given) and by a
``stamp`` (the code's git revision, ``runs.git_revision``), so only tasks of the sweep being run, by the same code,
are taken; lines of another sweep or revision stay in the file and are counted, never mixed in.

A line cut short by a kill (no newline at the end of the file) is cut off when the journal is opened, and its task
runs again; a complete line that does not parse is skipped and counted. One run at a time writes a journal: a second
one on the same folder is refused (an exclusive ``flock``, where the platform has it).

Each line is ``{"task": [...], "stamp": "...", "node": ID or null, "result": ...}``: ``node`` is the Ray node that
ran the task (``--backend ray``; null in the process pool) and ``result`` the worker's return value as JSON
(``runner.EpisodeResult.to_record`` for evaluate). Floats are written as Python's ``json`` writes them (``NaN`` and
``Infinity`` included), so every number reads back exactly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

from gigdispatch.envs.core.errors import InputError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory lock, the journal works the same
    fcntl = None  # type: ignore[assignment]


def _plain(value: Any) -> Any:
    """``json.dumps`` ``default``: NumPy scalars and arrays as Python numbers and lists."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def code_stamp() -> str:
    """The journal's stamp of the code: its git revision, and with uncommitted changes also a hash of them
    (``git diff HEAD``), so that a sweep restarted after an edit runs again rather than mixing in results of the
    code as it was."""
    import hashlib
    import subprocess

    from gigdispatch.training.runs import git_revision

    rev = git_revision()
    if not rev.endswith("-dirty"):
        return rev
    repo = Path(__file__).resolve().parents[1]
    try:
        diff = subprocess.run(["git", "-C", str(repo), "diff", "HEAD"], capture_output=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return rev
    return f"{rev}:{hashlib.sha256(diff).hexdigest()[:12]}"


def task_key(task: Any) -> str:
    """The journal key of a task: its JSON text (tuples are lists, as they read back)."""
    return json.dumps(task, default=_plain, separators=(",", ":"))


class TaskJournal:
    """The journal at ``path`` (created; with ``fresh`` emptied first), open for appending until ``close``.

    ``take(tasks)`` gives the results already there for some of ``tasks`` (by index); ``append`` adds one.
    ``damaged`` counts complete lines that did not parse, ``cut`` is True when a torn last line was cut off.
    """

    def __init__(self, path: str | os.PathLike[str], fresh: bool = False, what: str = "--out", stamp: str = "") -> None:
        self.path = Path(path)
        self.stamp = stamp
        self.damaged = 0
        self.cut = False
        self.other = 0
        self._entries: dict[str, tuple[Any, str | None]] = {}
        try:
            self._f: BinaryIO = open(self.path, "a+b")  # noqa: SIM115 - held open for appends until close()
        except OSError as exc:
            raise InputError(f"{what}: cannot open the journal {self.path} ({exc.strerror or exc})") from None
        if fcntl is not None:
            try:
                fcntl.flock(self._f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                self._f.close()
                raise InputError(
                    f"{what}: another run is writing to {self.path}; wait for it or give another {what}"
                ) from None
        if fresh:
            self._f.truncate(0)
        self._read()

    def _read(self) -> None:
        self._f.seek(0)
        data = self._f.read()
        end = data.rfind(b"\n") + 1  # everything after the last newline is a line a kill cut short
        if end < len(data):
            self._f.truncate(end)
            self._f.flush()
            os.fsync(self._f.fileno())
            self.cut = True
        for line in data[:end].splitlines():
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
                key, result, node = self._key(doc["task"], doc.get("stamp", "")), doc["result"], doc.get("node")
            except (ValueError, KeyError, TypeError):
                self.damaged += 1
                continue
            self._entries.setdefault(key, (result, node))

    @staticmethod
    def _key(task: Any, stamp: Any) -> str:
        return f"{stamp}\n{task_key(task)}"

    def take(self, tasks: Sequence[Any]) -> dict[int, tuple[Any, str | None]]:
        """``{index: (result, node)}`` for the tasks already in the journal; ``other`` is set to the number of
        journal entries that are no task of ``tasks`` (another sweep's) or were written under another ``stamp``."""
        keys = [self._key(t, self.stamp) for t in tasks]
        wanted = set(keys)
        self.other = sum(1 for k in self._entries if k not in wanted)
        return {i: self._entries[k] for i, k in enumerate(keys) if k in self._entries}

    def append(self, task: Any, result: Any, node: str | None = None) -> None:
        """Add one finished task (written whole, flushed and fsynced before this returns)."""
        doc = {"task": task, "stamp": self.stamp, "node": node, "result": result}
        line = json.dumps(doc, default=_plain, separators=(",", ":"))
        self._f.write(line.encode() + b"\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()  # closing the file releases the lock

    def __enter__(self) -> TaskJournal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def notes(self, taken: int, total: int, unit: str) -> list[str]:
        """What a run made of the journal, in words (nothing when it took nothing and found nothing else)."""
        out = []
        if taken:
            out.append(f"{taken} of {total} {unit}s taken from {self.path} (an earlier run of this sweep)")
        if self.other:
            out.append(f"{self.other} {unit}(s) of another sweep or code revision in {self.path} left out")
        if self.damaged:
            out.append(f"{self.damaged} damaged line(s) in {self.path} skipped")
        if self.cut:
            out.append(f"a line of {self.path} cut short by a kill was dropped (its {unit} ran again)")
        return out
