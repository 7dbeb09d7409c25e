"""Safe file-system operations: atomic writes and output folders vistrain may replace.

Atomic writes (:func:`atomic_write_text`, :func:`atomic_write_json`, :func:`atomic_write_bytes`,
and :func:`atomic_path` for writers that need a file name) write a temporary file next to the
target and ``os.replace`` it, so a reader (or a run killed with ``kill -9``) sees either the old
file or the new one, never half of one.  Every file vistrain writes goes through them; the
temporary-name rule is a parameter (``suffix``): run folders use ``.NAME.<pid>.tmp``, the caches
``NAME.<random>.part``.

Output folders: ``--overwrite`` must never delete what vistrain did not create.  Every run, cv or
compare folder gets a marker file ``.vistrain-run`` (a small JSON document: the kind of folder
and, for runs, the data they were trained on); folders written before the marker existed are
recognised by their files (:func:`vistrain_output_kind`).  :func:`prepare_output_dir` refuses the
data folder, any folder around it or inside it, the home folder and the filesystem root, and
moves a replaced run aside (``OUT.old-<time>``) instead of deleting it; :func:`discard_replaced`
deletes that copy once the new run has written its first checkpoint.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> atomic_write_json(d / "x.json", {"a": 1})
    >>> (d / "x.json").read_text()
    '{\\n "a": 1\\n}'
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from vistrain.config.spelling import option
from vistrain.errors import RunDirError

log = logging.getLogger("vistrain")

MARKER = ".vistrain-run"
KINDS = ("run", "cv", "compare")


# ---- atomic writes ------------------------------------------------------------------------------
def temp_beside(path: str | Path, suffix: str | None = None) -> Path:
    """A new, empty temporary file next to ``path`` (same filesystem: ``os.replace`` is atomic).

    The name rule is the caller's: ``suffix=None`` gives ``.NAME.<pid>.tmp`` (hidden, one per
    process; :func:`remove_stale_temporaries` recognises it in a run folder being resumed); a
    ``suffix`` gives ``NAME.<random><suffix>``, unique across processes and threads (the caches
    use ``".part"``: their budget counts such a file as an unfinished build, their verification
    skips it).

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> temp_beside(d / "a.json").name == f".a.json.{os.getpid()}.tmp"
        True
        >>> p = temp_beside(d / "a.json", ".part"); p.name.startswith("a.json."), p.suffix
        (True, '.part')
    """
    path = Path(path)
    if suffix is None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.touch()
        return tmp
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=suffix, dir=path.parent)
    os.close(fd)
    return Path(tmp)


@contextlib.contextmanager
def atomic_path(path: str | Path, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary file (:func:`temp_beside`) to write ``path`` through: on a normal exit it
    replaces ``path`` with ``os.replace``, on an exception it is deleted and ``path`` untouched.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> with atomic_path(d / "x.txt", suffix=".part") as tmp:
        ...     _ = tmp.write_text("new")
        >>> (d / "x.txt").read_text(), [p.name for p in d.iterdir()]
        ('new', ['x.txt'])
    """
    path = Path(path)
    tmp = temp_beside(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        try:
            tmp.unlink(missing_ok=True)  # only still there when the write or the rename failed
        except OSError:  # the original error matters, not this one
            pass


def atomic_write_bytes(path: str | Path, data: bytes, *, fsync: bool = False,
                       suffix: str | None = None) -> None:
    """Write ``data`` to ``path`` through a temporary sibling and ``os.replace``.

    ``fsync=True`` also flushes the bytes to disk before the rename (checkpoints: the rename must
    never point at data still only in the page cache when the machine loses power).  ``suffix``
    is the temporary-name rule of :func:`temp_beside`.
    """
    with atomic_path(path, suffix=suffix) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        if fsync:
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_text(path: str | Path, text: str, *, suffix: str | None = None) -> None:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"), suffix=suffix)


def atomic_write_json(path: str | Path, obj: Any, *, indent: int | None = 1,
                      suffix: str | None = None) -> None:
    """:func:`atomic_write_text` of ``obj`` as JSON."""
    atomic_write_text(path, json.dumps(obj, indent=indent), suffix=suffix)


# ---- which folders are vistrain's ------------------------------------------------------------
def read_marker(folder: str | Path) -> dict | None:
    """The marker document of ``folder``, or None when it has none (or an unreadable one)."""
    path = Path(folder) / MARKER
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def write_marker(folder: str | Path, kind: str, **info: Any) -> None:
    """Mark ``folder`` as created by vistrain (``kind``: run | cv | compare) with ``info``."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    atomic_write_json(Path(folder) / MARKER, {"created_by": "vistrain", "kind": kind, **info})


def update_marker(folder: str | Path, **info: Any) -> None:
    doc = read_marker(folder) or {"created_by": "vistrain", "kind": "run"}
    doc.update(info)
    atomic_write_json(Path(folder) / MARKER, doc)


def vistrain_output_kind(folder: str | Path) -> str | None:
    """``"run"``, ``"cv"`` or ``"compare"`` when ``folder`` was written by vistrain, else None.

    Besides the marker, older folders are recognised by files only vistrain writes together:
    a run has ``config.yaml`` with ``run.json``, ``model.json``, ``splits.json`` or a
    ``checkpoints/last.pt``; cross-validation has ``config.yaml`` + ``folds.json``; a comparison
    has ``compare.json``, or holds nothing but run folders (one interrupted before its summary).
    """
    folder = Path(folder)
    marker = read_marker(folder)
    if marker and marker.get("created_by") == "vistrain" and marker.get("kind") in KINDS:
        return marker["kind"]
    if (folder / "config.yaml").is_file():
        if (folder / "folds.json").is_file():
            return "cv"
        if any((folder / n).is_file() for n in ("run.json", "model.json", "splits.json",
                                                 "checkpoints/last.pt")):
            return "run"
    if (folder / "compare.json").is_file():
        return "compare"
    entries = [p for p in folder.iterdir() if p.name not in ("compare.html",)] if folder.is_dir() else []
    if entries and all(p.is_dir() and vistrain_output_kind(p) == "run" for p in entries):
        return "compare"
    return None


# ---- preparing an output folder ---------------------------------------------------------------
def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output_location(out: str | Path, *, data_folder: str | Path | None = None) -> Path:
    """Refuse output folders whose replacement could destroy user files; returns ``out`` resolved.

    Refused: an existing file; the filesystem root; the home folder; the data folder, any folder
    that contains it, and any visible folder inside it (it would be read as a class folder).
    """
    out_path = Path(out).expanduser()
    if out_path.exists() and not out_path.is_dir():
        raise RunDirError(f"{out}: is a file, not a folder; give another --out")
    res = out_path.resolve()
    if res == Path(res.anchor) or res == Path.home().resolve():
        raise RunDirError(f"{out}: refusing to use the {'filesystem root' if res == Path(res.anchor) else 'home folder'} "
                          "as an output folder; give a new folder, e.g. --out runs/NAME")
    if data_folder:
        data = Path(data_folder).expanduser().resolve()
        if _inside(data, res):
            raise RunDirError(f"{out}: is the data folder {data_folder} or contains it; give an output "
                              "folder outside the data, e.g. --out runs/NAME")
        if _inside(res, data) and not res.relative_to(data).parts[0].startswith("."):
            raise RunDirError(f"{out}: lies inside the data folder {data_folder} (it would be read as "
                              "a class); give an output folder outside the data, e.g. --out runs/NAME")
    return res


def prepare_output_dir(out: str | Path, *, kind: str = "run", overwrite: bool = False,
                       resume: bool = False, reuse: bool = False,
                       data_folder: str | Path | None = None, **marker_info: Any) -> Path | None:
    """Make ``out`` ready for a new ``kind`` folder (or check it for ``resume``); returns the path
    the replaced folder was moved to (None if nothing was replaced).

    * missing or empty ``out``: created and marked (``resume``: an error, nothing to resume);
    * ``resume`` or ``reuse``: a non-empty ``out`` must be a vistrain folder of this kind (marked
      now if it was not); ``reuse`` (``cv --fold k`` processes sharing OUT, ``cv --resume``) also
      accepts a missing or empty one;
    * a vistrain folder and ``overwrite``: moved aside to ``OUT.old-<time>`` (deleted by
      :func:`discard_replaced` once the new run is under way; restorable by :func:`restore_replaced`);
    * anything else non-empty: a one-line :class:`RunDirError`, nothing touched.
    """
    out = Path(out).expanduser()
    check_output_location(out, data_folder=data_folder)
    if not out.is_dir() or not any(out.iterdir()):
        if resume and not reuse:
            raise RunDirError(f"{out}: nothing to resume (no such run directory or an empty one); "
                              "start it without --resume")
        out.mkdir(parents=True, exist_ok=True)
        write_marker(out, kind, **marker_info)
        return None
    found = vistrain_output_kind(out)
    if resume or reuse:
        if found != kind:
            raise RunDirError(f"{out}: not a vistrain {kind} directory (no {MARKER} or config.yaml); "
                              f"give the --out folder of an earlier `vistrain {'train' if kind == 'run' else kind}`"
                              + ("" if resume and not reuse else " or a new folder"))
        if read_marker(out) is None:
            write_marker(out, kind, **marker_info)
        remove_stale_temporaries(out)
        return None
    if not overwrite and found:
        raise RunDirError(f"{out}: run directory exists and is not empty; use {option('overwrite')} to "
                          f"replace it, {option('resume')} to continue it, or another {option('out', 'DIR')}")
    if found is None:
        raise RunDirError(f"{out}: folder is not empty and was not written by vistrain (no {MARKER}); "
                          f"{option('overwrite')} only replaces vistrain run folders; give a new or "
                          f"empty {option('out', 'DIR')}")
    res = out.resolve()
    cwd = Path.cwd().resolve()
    if _inside(cwd, res):
        raise RunDirError(f"{out}: is the current folder or contains it; cannot replace it, "
                          "change directory or give another --out")
    aside = _aside_name(res)
    os.rename(res, aside)
    log.info("previous contents of %s moved to %s (deleted once the new run has its first "
             "checkpoint)", out, aside)
    out.mkdir(parents=True, exist_ok=True)
    write_marker(out, kind, replaces=str(aside), **marker_info)
    return aside


def _aside_name(folder: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        cand = folder.with_name(f"{folder.name}.old-{stamp}" + (f"-{n}" if n else ""))
        if not cand.exists():
            return cand
    raise RunDirError(f"{folder}: too many {folder.name}.old-* folders next to it; remove them")


def remove_stale_temporaries(folder: str | Path) -> list[str]:
    """Delete the temporary files (``.NAME.<pid>.tmp``) that writes killed half-way left in
    ``folder`` and its ``checkpoints/``; returns their names.  Only for a run being resumed:
    no other process writes there then."""
    removed = []
    for sub in (Path(folder), Path(folder) / "checkpoints"):
        for p in sub.glob(".*.tmp") if sub.is_dir() else ():
            if re.fullmatch(r"\..+\.\d+\.tmp", p.name) and p.is_file():
                p.unlink()
                removed.append(p.name)
    return removed


def discard_replaced(out: str | Path) -> None:
    """Delete the folder ``out`` replaced (recorded in its marker), now that ``out`` holds a run
    that can be resumed; a no-op when nothing was replaced."""
    marker = read_marker(out)
    old = (marker or {}).get("replaces")
    if not old:
        return
    old = Path(old)
    if old.is_dir() and vistrain_output_kind(old) is not None:
        shutil.rmtree(old, ignore_errors=True)
        log.info("removed the replaced run %s", old)
    update_marker(out, replaces=None)


def restore_replaced(out: str | Path) -> Path | None:
    """Undo :func:`prepare_output_dir`'s replacement when the new run failed before it could be
    resumed: delete the new ``out`` (vistrain's own) and move the old folder back."""
    out = Path(out)
    old = (read_marker(out) or {}).get("replaces")
    if not old or not Path(old).is_dir():
        return None
    shutil.rmtree(out)
    os.rename(old, out)
    log.warning("the new run failed before its first checkpoint; the previous contents of %s are "
                "restored", out)
    return out
