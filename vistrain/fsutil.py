"""Safe file-system operations: atomic writes and output folders vistrain may replace.

Atomic writes (:func:`atomic_write_text`, :func:`atomic_write_json`, :func:`atomic_write_bytes`,
and :func:`atomic_path` for writers that need a file name) write a temporary file next to the
target and ``os.replace`` it, so a reader (or a run killed with ``kill -9``) sees either the old
file or the new one, never half of one.  Every file vistrain writes goes through them; the
temporary-name rule is a parameter (``suffix``): run folders use ``.NAME.<pid>.tmp``, the caches
``NAME.<random>.part``.

Ownership: vistrain deletes or replaces only what it can prove it wrote.

* Every folder vistrain writes (a run, cv, compare, shard, cache or outputs folder) carries a
  marker file ``.vistrain-run`` (a small JSON document: ``created_by``, the ``kind`` of folder, an
  ``id`` (uuid4), and for runs the data they were trained on).  A folder without it is never
  replaced, cleared or written into when it holds anything: no folder is recognised by the files
  it happens to hold (:func:`vistrain_output_kind`).
* A single file vistrain writes (a preview or lr-find PNG) carries a ``tEXt`` chunk
  ``vistrain-output`` (:func:`write_owned_png`); an existing file without it is replaced only with
  ``--overwrite``, never inside a data folder and never a file of a vistrain folder
  (:func:`check_output_file`).
* :func:`check_output_location` refuses the data folder, any folder around it or inside it, the
  home folder and the filesystem root; :func:`prepare_output_dir` moves a replaced run aside
  (``OUT.old-<time>``) instead of deleting it, :func:`discard_replaced` deletes that copy once the
  new run has written its first checkpoint; :func:`prepare_outputs_folder` is the same rule for
  the folders of ``evaluate``, ``explain`` and ``check``.
* A process writing an output folder holds an exclusive ``flock`` on it (:func:`lock_folder`) for
  as long as it lives: a second writer fails at once with one line naming the first one's pid.

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
import struct
import tempfile
import time
import uuid
import zlib
from pathlib import Path
from typing import Any, Iterator

from vistrain.config.spelling import option
from vistrain.errors import RunDirError

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None

log = logging.getLogger("vistrain")

MARKER = ".vistrain-run"
# run | cv | compare: replaceable with --overwrite; shards: `pack`'s folders; outputs: the folders
# of evaluate / explain / check; cache: the cache root ($VISTRAIN_CACHE)
KINDS = ("run", "cv", "compare", "shards", "outputs", "cache")
PNG_OWNER_KEY = b"vistrain-output"  # the tEXt keyword of a PNG vistrain wrote


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
                      suffix: str | None = None, default=None) -> None:
    """:func:`atomic_write_text` of ``obj`` as JSON (``default``: as for :func:`json.dumps`)."""
    atomic_write_text(path, json.dumps(obj, indent=indent, default=default), suffix=suffix)


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
    """Mark ``folder`` as created by vistrain (``kind``: one of :data:`KINDS`) with ``info``, a
    fresh ``id`` (uuid4) and the writer's ``pid``."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    atomic_write_json(Path(folder) / MARKER, {"created_by": "vistrain", "kind": kind,
                                              "id": uuid.uuid4().hex, "pid": os.getpid(), **info})


def update_marker(folder: str | Path, **info: Any) -> None:
    doc = read_marker(folder) or {"created_by": "vistrain", "kind": "run", "id": uuid.uuid4().hex}
    doc.update(info)
    atomic_write_json(Path(folder) / MARKER, doc)


def vistrain_output_kind(folder: str | Path) -> str | None:
    """The ``kind`` in the marker of ``folder`` (one of :data:`KINDS`), or None: a folder is
    vistrain's only when it carries the marker (markers written before the ``id`` existed count).

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "config.yaml").write_text("x"); _ = (d / "model.json").write_text("{}")
        >>> vistrain_output_kind(d) is None           # looking like a run proves nothing
        True
        >>> write_marker(d, "run"); vistrain_output_kind(d)
        'run'
    """
    marker = read_marker(folder)
    if marker and marker.get("created_by") == "vistrain" and marker.get("kind") in KINDS:
        return marker["kind"]
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

    * missing or empty ``out``: created, locked (:func:`lock_folder`) and marked (``resume``: an
      error, nothing to resume);
    * ``resume`` or ``reuse``: a non-empty ``out`` must carry the marker of this kind; ``reuse``
      (``cv --fold k`` processes sharing OUT, ``cv --resume``) also accepts a missing or empty
      one, and takes no lock (those processes write different subfolders);
    * a run, cv or compare folder and ``overwrite``: moved aside to ``OUT.old-<time>`` (deleted by
      :func:`discard_replaced` once the new run is under way; restorable by :func:`restore_replaced`);
    * anything else non-empty: a one-line :class:`RunDirError`, nothing touched.

    A symbolic link ``out`` is followed: its target is the folder checked, replaced and written.
    """
    res = check_output_location(out, data_folder=data_folder)
    if resume and not reuse and (not res.is_dir() or not any(res.iterdir())):
        raise RunDirError(f"{out}: nothing to resume (no such run directory or an empty one); "
                          "start it without --resume")
    res.mkdir(parents=True, exist_ok=True)
    if not reuse:
        lock_folder(res)
    if not any(res.iterdir()):
        write_marker(res, kind, **marker_info)
        return None
    found = vistrain_output_kind(res)
    if resume or reuse:
        if found != kind:
            raise RunDirError(f"{out}: not a vistrain {kind} directory (no {MARKER} of kind {kind}); "
                              f"give the --out folder of an earlier `vistrain {'train' if kind == 'run' else kind}`"
                              + ("" if resume and not reuse else " or a new folder"))
        if not reuse:
            update_marker(res, pid=os.getpid())
        remove_stale_temporaries(res)
        return None
    check_replaceable(out, found, kind=kind, overwrite=overwrite)
    return _replace(res, kind, marker_info)


def check_replaceable(out: str | Path, found: str | None, *, kind: str, overwrite: bool) -> None:
    """Refuse a non-empty ``out`` holding vistrain folder kind ``found`` (None: no marker) that a
    new ``kind`` folder may not replace: not vistrain's, a kind that is never replaced, or no
    ``overwrite``.  :func:`prepare_output_dir` calls it, and so does a workflow that checks its
    ``--out`` before any work (nothing is written here)."""
    if found is None:
        raise RunDirError(f"{out}: folder is not empty and was not written by vistrain (no {MARKER}); "
                          f"{option('overwrite')} only replaces vistrain run folders; give a new or "
                          f"empty {option('out', 'DIR')}")
    if found not in REPLACEABLE:
        raise RunDirError(f"{out}: holds vistrain's {found} folder, which a {kind} does not replace; "
                          "give another --out")
    if not overwrite:
        raise RunDirError(f"{out}: run directory exists and is not empty; use {option('overwrite')} to "
                          f"replace it, {option('resume')} to continue it, or another {option('out', 'DIR')}")


REPLACEABLE = ("run", "cv", "compare")


def _replace(res: Path, kind: str, marker_info: dict) -> Path:
    """Move the (locked) folder ``res`` aside and put a new, locked, marked one in its place."""
    if _inside(Path.cwd().resolve(), res):
        raise RunDirError(f"{res}: is the current folder or contains it; cannot replace it, "
                          "change directory or give another --out")
    aside = _aside_name(res)
    new = res.with_name(f".{res.name}.new-{os.getpid()}")
    shutil.rmtree(new, ignore_errors=True)  # only ever this process's own, left by a crash
    new.mkdir()
    lock_folder(new)
    write_marker(new, kind, replaces=str(aside), **marker_info)
    os.rename(res, aside)
    try:
        os.rename(new, res)  # fails when another process made ``res`` meanwhile
    except OSError:
        shutil.rmtree(new, ignore_errors=True)
        if not res.exists():
            os.rename(aside, res)
        raise RunDirError(f"{res}: is being written by another vistrain process; wait for it or "
                          "give another --out") from None
    unlock_folder(aside)
    log.info("previous contents of %s moved to %s (deleted once the new run has its first "
             "checkpoint)", res, aside)
    return aside


# ---- locks ------------------------------------------------------------------------------------
_HELD: dict[tuple[int, int], int] = {}  # (device, inode) of a folder -> the fd holding its flock


def lock_folder(folder: str | Path) -> None:
    """Take an exclusive lock on ``folder`` for the rest of this process (re-entrant within it);
    a folder another process holds is a one-line :class:`RunDirError` naming that process.

    The lock is an ``flock`` on the folder itself: it follows the folder when it is renamed
    (moved aside by ``--overwrite``) and is released when the process ends, however it ends.

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> lock_folder(d); lock_folder(d)     # the same process may take it again
        >>> unlock_folder(d)
    """
    if fcntl is None:  # no flock on this platform: no protection against concurrent writers
        return
    fd = os.open(folder, os.O_RDONLY)
    st = os.fstat(fd)
    held = _HELD.get((st.st_dev, st.st_ino))
    if held is not None and os.fstat(held).st_nlink > 0:
        os.close(fd)
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        pid = (read_marker(folder) or {}).get("pid", "unknown")
        raise RunDirError(f"{folder}: is being written by another vistrain process (pid {pid}); "
                          "wait for it or give another --out") from None
    _HELD[(st.st_dev, st.st_ino)] = fd


def unlock_folder(folder: str | Path) -> None:
    """Release this process's lock on ``folder`` (a no-op when it holds none)."""
    try:
        st = os.stat(folder)
    except OSError:
        return
    fd = _HELD.pop((st.st_dev, st.st_ino), None)
    if fd is not None:
        os.close(fd)


# ---- single files and outputs folders ---------------------------------------------------------
def check_output_file(path: str | Path, *, data_folders=(), overwrite: bool | None = None) -> Path:
    """Refuse a single-file output (a figure) that could destroy a user file; returns it resolved.

    Refused, before any work: a path inside any of ``data_folders`` (also through symbolic
    links); an existing file of a vistrain folder (a run's ``metrics.json``); an existing file
    vistrain did not write (no ``vistrain-output`` PNG chunk, :func:`is_owned_png`) unless
    ``overwrite`` is True (``None``: the verb has no ``--overwrite``); a folder.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "mine.png").write_bytes(b"x")
        >>> check_output_file(d / "new.png") == (d / "new.png").resolve()
        True
        >>> try:
        ...     check_output_file(d / "mine.png")
        ... except RunDirError as err:
        ...     print(str(err).split(": ", 1)[1])
        exists and was not written by vistrain; give another --out or delete it yourself
    """
    res = Path(path).expanduser().resolve()
    if res.is_dir():
        raise RunDirError(f"{path}: is a folder; give --out a file path, e.g. --out figure.png")
    for data in data_folders:
        if data and _inside(res, Path(data).expanduser().resolve()):
            raise RunDirError(f"{path}: lies inside the data folder {data} (it would replace or join "
                              "the training images); give --out a path outside the data")
    if not res.exists():
        return res
    owner = vistrain_output_kind(res.parent)
    if owner is not None and owner != "outputs":
        raise RunDirError(f"{path}: is a file of the vistrain {owner} folder {res.parent}; give "
                          "another --out")
    if not overwrite and not is_owned_png(res):
        fix = "add --overwrite to replace it, or give another --out" if overwrite is False else \
            "give another --out or delete it yourself"
        raise RunDirError(f"{path}: exists and was not written by vistrain; {fix}")
    return res


def check_outputs_folder(out: str | Path, *, data_folders=()) -> Path:
    """Refuse an output folder of evaluate / explain / check that could mix with user files;
    returns it resolved.  Refused: a file; the root, the home folder; a folder inside, equal to
    or around any of ``data_folders``; a non-empty folder without the marker; a run, cv, compare,
    shard or cache folder itself (its own files are never replaced: give a subfolder)."""
    res = Path(out).expanduser()
    if res.exists() and not res.is_dir():
        raise RunDirError(f"{out}: is a file, not a folder; give --out a folder path")
    res = check_output_location(res)
    for data in data_folders:
        if not data:
            continue
        d = Path(data).expanduser().resolve()
        if _inside(res, d) or _inside(d, res):
            raise RunDirError(f"{out}: is, contains or lies inside the data folder {data} (the next "
                              "training would read the outputs as images); give --out outside the data")
    if res.is_dir() and any(res.iterdir()):
        kind = vistrain_output_kind(res)
        if kind is None:
            raise RunDirError(f"{out}: folder is not empty and was not written by vistrain (no "
                              f"{MARKER}); give a new or empty --out")
        if kind != "outputs":
            raise RunDirError(f"{out}: is a vistrain {kind} folder, whose own files are not "
                              f"replaced; give a subfolder or another folder, e.g. --out {Path(out) / 'outputs'}")
    return res


def prepare_outputs_folder(out: str | Path, *, data_folders=()) -> Path:
    """:func:`check_outputs_folder`, then create, lock and mark ``out`` (kind ``outputs``)."""
    res = check_outputs_folder(out, data_folders=data_folders)
    res.mkdir(parents=True, exist_ok=True)
    lock_folder(res)
    if vistrain_output_kind(res) is None:
        write_marker(res, "outputs")
    return res


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IHDR_END = 8 + 25  # signature + the IHDR chunk, always first and 13 bytes long


def is_owned_png(path: str | Path) -> bool:
    """True when ``path`` is a PNG that carries vistrain's ``tEXt`` chunk (:func:`write_owned_png`)."""
    want = PNG_SIGNATURE
    try:
        with open(path, "rb") as fh:
            head = fh.read(_IHDR_END + 8 + len(PNG_OWNER_KEY))
    except OSError:
        return False
    return head.startswith(want) and head[_IHDR_END + 4:] == b"tEXt" + PNG_OWNER_KEY


def write_owned_png(path: str | Path, draw) -> Path:
    """Write a figure through ``draw(tmp)`` (any writer that takes a file path) to a temporary
    sibling, tag it as vistrain's when it is a PNG (a ``tEXt`` chunk right after ``IHDR``, no
    re-encoding) and rename it to ``path``.  Returns ``path``.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> from PIL import Image
        >>> _ = write_owned_png(d / "f.png", lambda tmp: Image.new("L", (2, 2)).save(tmp))
        >>> is_owned_png(d / "f.png"), Image.open(d / "f.png").size
        (True, (2, 2))
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".tmp" + (path.suffix or ".png")) as tmp:
        draw(tmp)
        data = tmp.read_bytes()
        if data.startswith(PNG_SIGNATURE) and len(data) > _IHDR_END:
            body = PNG_OWNER_KEY + b"\0vistrain"
            chunk = (struct.pack(">I", len(body)) + b"tEXt" + body
                     + struct.pack(">I", zlib.crc32(b"tEXt" + body) & 0xFFFFFFFF))
            tmp.write_bytes(data[:_IHDR_END] + chunk + data[_IHDR_END:])
    return path


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
    out = Path(out).resolve()  # a symbolic link --out: its target is what was replaced
    old = (read_marker(out) or {}).get("replaces")
    if not old or not Path(old).is_dir():
        return None
    shutil.rmtree(out)
    os.rename(old, out)
    log.warning("the new run failed before its first checkpoint; the previous contents of %s are "
                "restored", out)
    return out
