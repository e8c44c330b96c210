"""Atomic writes: a file is either its old content or its new one, never half
written (a reader racing the writer, a crash, Ctrl-C, a full disk).

One recipe for every writer of the project: write a temporary file in the
same folder (same file system, so the rename is atomic), then
:func:`os.replace` it onto the target; on any error the temporary file is
removed and the target is untouched.  The temporary name is unique per
process and call, so concurrent writers of one path never share it, and it is
created with the process's usual permissions (umask), like the target would be.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "atomic_torch_save"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = False) -> Iterator[Path]:
    """A temporary path next to ``path`` for the caller to write; when the block ends without an
    error it replaces ``path`` in one step (after an ``fsync`` if asked: survives a power cut).

    The folder of ``path`` is created if missing.  On an error the temporary file is removed and
    the error propagates."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`atomic_path`); returns ``path``."""
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, *, fsync: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_path`); returns ``path``."""
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` atomically (:func:`atomic_path`); returns ``path``."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)
