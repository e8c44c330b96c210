"""The scratch folder of a submission: how much disk a job used, and emptying it between jobs."""

from __future__ import annotations

import os


def tree_bytes(folder: str, skip: str | None = None, max_entries: int = 20000) -> int:
    """Disk blocks used below ``folder`` (iterative; a folder with more entries counts as full)."""
    total, entries, stack = 0, 0, [folder]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as it:
                for entry in it:
                    entries += 1
                    if entries > max_entries:
                        return 1 << 62
                    if skip is not None and entry.path == skip:
                        continue
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    total += info.st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
        except OSError:
            continue
    return total


def clear_scratch(scratch: str | None, keep: str | None) -> None:
    """Remove what a job left in the scratch folder (the next job starts empty)."""
    import shutil

    if not scratch:
        return
    try:
        entries = list(os.scandir(scratch))
    except OSError:
        return
    for entry in entries:
        if keep is not None and entry.path == keep:
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)
        except OSError:
            pass
