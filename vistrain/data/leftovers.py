"""Temporary files and folders that a killed vistrain process left behind (``kill -9``, a power
loss): recognised by the writer's process id in their names, removed by the next run of the
same kind.

A temporary name carries ``<pid>`` (:func:`pid_tag`); :func:`remove_dead` deletes an entry
whose name matches the caller's pattern when that process no longer runs and the entry is older
than the process now looking (a pid reused by a newer process cannot make a live file look
dead, and nothing younger than the cleaner is touched).  Only the caller's own patterns, in the
caller's own folders: every other file is left alone.

Example:
    >>> import pathlib, re, tempfile
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "x.999999999.part").write_bytes(b"half")   # no such process
    >>> import os; os.utime(d / "x.999999999.part", (0, 0))
    >>> [p.name for p in remove_dead(d, re.compile(r"x\\.(?P<pid>\\d+)\\.part"))]
    ['x.999999999.part']
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import time
from pathlib import Path

log = logging.getLogger("vistrain")

STARTED = time.time()  # about when this process started (this module loads with the data layer)


def pid_tag() -> str:
    """This process's id, for temporary names: ``f"shard.{pid_tag()}.part"``."""
    return str(os.getpid())


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (signal 0 asks without sending)."""
    try:
        os.kill(pid, 0)
    except PermissionError:  # another user's process
        return True
    except (ProcessLookupError, OverflowError, ValueError):  # none, or a number no pid can be
        return False
    return True


def left_by_dead_writer(path: Path, pattern: re.Pattern) -> bool:
    """Whether ``path``'s name fully matches ``pattern`` and names (group ``pid``) a process that
    no longer runs, and ``path`` is older than this process.  Raises OSError when it is gone."""
    m = pattern.fullmatch(path.name)
    return bool(m) and not process_alive(int(m["pid"])) and path.lstat().st_mtime < STARTED


def remove_dead(folder: str | Path, pattern: re.Pattern) -> list[Path]:
    """Delete the entries of ``folder`` whose name fully matches ``pattern`` (its group ``pid``
    the writer) when the writer is gone and the entry is older than this process; returns them."""
    removed = []
    folder = Path(folder)
    for path in folder.iterdir() if folder.is_dir() else ():
        try:
            if not left_by_dead_writer(path, pattern):
                continue
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        except OSError:  # removed meanwhile, or not ours to remove
            continue
        removed.append(path)
    if removed:
        log.info("removed %d temporary file(s) that a killed run left in %s", len(removed), folder)
    return removed
