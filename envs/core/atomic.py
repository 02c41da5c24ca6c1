"""Atomic file writes and the output-path rules every command shares.

A file is written to a temporary file in the same folder, fsynced, then renamed over its path, so it
appears whole or not at all and nothing already there is lost. The temporary file is created as
``open()`` creates a file (mode 0666 less the umask: 0644 under umask 022), so the result has the mode
any other new file of the user's would have, not a private 0600.

Output folders: an option that names a results folder (``evaluate --out DIR``) creates it, with its
missing parents (``ensure_out_dir``); an option that names a file (``simulate --out FILE.json``,
``export --out FILE.onnx``) writes into an existing folder only (``check_out_file``), and the writers
here never create a folder.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from gigdispatch.envs.core.errors import InputError

_FILE_MODE = 0o666  # less the umask, as open() does


def check_out_file(path: str | os.PathLike[str], what: str = "--out", error: type[InputError] = InputError) -> Path:
    """``path`` as a ``Path`` when the folder it goes in exists; else ``error`` in one line naming ``what``
    and the folder (create it first). A folder is never created for a file."""
    path = Path(path)
    parent = path.parent
    if path.is_dir():
        raise error(f"{what} {path}: is a folder; give a file name")
    if not parent.is_dir():
        if parent.exists():
            raise error(f"{what} {path}: {parent} is not a folder")
        raise error(f"{what} {path}: folder {parent} does not exist; create it first")
    return path


def ensure_out_dir(path: str | os.PathLike[str], what: str = "--out") -> Path:
    """Create the results folder ``path`` (and its missing parents: the user named it); ``InputError`` in one
    line naming ``what`` when it, or a parent, exists and is not a folder or cannot be created."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{what}: {path} exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{what}: cannot create the folder {path} ({exc.strerror or exc})") from None
    return path


def _create_temp(folder: Path, name: str) -> tuple[int, Path]:
    """A new, empty temporary file next to ``name`` in ``folder``, opened for writing, with the umask's mode."""
    for _ in range(100):
        tmp = folder / f".{name}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), _FILE_MODE), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{folder}: no free temporary file name for {name}")


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file in the same folder, fsync, ``os.replace``), with
    the mode the umask gives. The folder must exist: ``InputError`` naming it otherwise."""
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"{path}: folder {path.parent} does not exist; create it first")
    fd, tmp = _create_temp(path.parent, path.name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """``atomic_write_bytes`` of ``text`` in UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))
