"""The failures every verb shares, each turned into one line on stderr (:func:`run_verb`).

Kept apart from :mod:`vistrain.cli.common` so that the entry point imports nothing heavier than
the standard library before it knows what to run (``vistrain --version`` answers at once).

Example:
    >>> from vistrain.cli.failures import no_space_error
    >>> import errno
    >>> no_space_error(RuntimeError("wrapped")) is None
    True
    >>> full = OSError(errno.ENOSPC, "No space left on device")
    >>> no_space_error(ValueError("x")) is None, no_space_error(full) is full
    (True, True)
"""
from __future__ import annotations

import errno
import io
import os
import shutil
import signal
import sys
import threading
from pathlib import Path

from vistrain.errors import DataError, RunDirError, VistrainError


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where SIGINT raises :class:`KeyboardInterrupt`: a job stopped by ``kill`` or a
    scheduler cleans up exactly as one stopped by Ctrl-C (``except KeyboardInterrupt`` covers both)."""


_HANDLER_PID: list[int] = []   # the process that installed the handler (run_verb)


def _raise_terminated(signum, frame):
    if _HANDLER_PID and os.getpid() != _HANDLER_PID[-1]:
        # a forked worker inherited the handler: a pool ending its workers with SIGTERM must see
        # them go quietly, as SIGTERM's default does, not print a traceback from each
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    raise Terminated()


def run_verb(args) -> int:
    """Run the verb (``args.func``) with its inputs checked first (:func:`check_inputs`: a missing
    path fails before torch loads) and every shared failure turned into one line on stderr:
    a :class:`VistrainError` (exit 2, its own code), Ctrl-C (130) or SIGTERM (143) with a message
    that fits the verb (:func:`interrupt_line`), a full disk (``errno.ENOSPC``, exit 2,
    :func:`no_space_line`) and a closed stdout pipe (``vistrain stats DATA | head -1``: quiet,
    exit 141 as the shell reports SIGPIPE).  ``-v`` re-raises instead, with the traceback.
    """
    # signal handlers belong to the main thread; main() called from another one keeps the default
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main else None
    _HANDLER_PID.append(os.getpid())
    try:
        check_inputs(args)
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe fails here, inside the try, not at interpreter exit
        return code
    except VistrainError as err:
        if getattr(args, "verbose", False):
            raise
        return _fail(str(err), err.exit_code)
    except KeyboardInterrupt as err:
        print(interrupt_line(args), file=sys.stderr)
        return 143 if isinstance(err, Terminated) else 130
    except BrokenPipeError:
        return quiet_broken_pipe()
    except Exception as err:  # noqa: BLE001 - only a full disk is handled, the rest re-raised
        full = no_space_error(err)
        if full is None or getattr(args, "verbose", False):
            raise
        return _fail(no_space_line(full), 2)
    finally:
        _HANDLER_PID.pop()
        if in_main:
            signal.signal(signal.SIGTERM, previous)


def _fail(line: str, code: int) -> int:
    print(f"error: {line}", file=sys.stderr)
    return code


def quiet_broken_pipe() -> int:
    """The reader of stdout went away (``| head -1``): point stdout at /dev/null so that the
    interpreter's final flush does not print a second error, and exit 141 (128 + SIGPIPE), the
    recipe of the Python docs (``signal`` module, "Note on SIGPIPE")."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 141


def check_inputs(args) -> None:
    """The paths a verb reads, checked before its workflow (and torch) is imported: ``data`` (a
    folder, a file such as a shard index or an image, or a URL), ``run_dir`` (unless ``--model``
    makes it an image), ``--resume RUN_DIR`` of ``train`` and ``--config``."""
    run_dir = getattr(args, "run_dir", None)
    if isinstance(getattr(args, "resume", None), str):
        run_dir = args.resume
    if run_dir and not getattr(args, "model", None) and not os.path.isdir(run_dir) \
            and not exported_file(args.command, run_dir):
        raise RunDirError(f"{run_dir}: run directory not found; give the --out folder of `vistrain "
                          f"{'train`, `vistrain cv` or `vistrain compare' if args.command == 'report' else 'train'}`")
    data = getattr(args, "data_path", None) or getattr(args, "data", None)
    if isinstance(data, str) and "://" not in data and not os.path.exists(data):
        raise DataError(f"{data}: no such folder; give the folder that holds one sub-folder per class")
    config = getattr(args, "config", None)
    if isinstance(config, str) and not os.path.isfile(config):
        raise VistrainError(f"{config}: config file not found")


def exported_file(command: str, path: str) -> bool:
    """Whether ``path`` is an ONNX file that ``command`` takes instead of a run folder (``serve``
    and ``predict`` run a ``vistrain export`` file alone, without PyTorch)."""
    return command in ("serve", "predict") and path.lower().endswith(".onnx") and os.path.isfile(path)


def interrupt_line(args) -> str:
    """What Ctrl-C (or SIGTERM) left behind, for this verb: only ``train`` and ``cv`` can be
    resumed, and their line names the actual folder (the CLI fixes ``--out`` before starting)."""
    out = getattr(args, "out", None)
    if args.command == "train":
        run_dir = getattr(args, "resume", None) or out
        if run_dir and (Path(run_dir) / "config.yaml").is_file():
            return (f"interrupted: {run_dir} keeps its last checkpoint; resume with "
                    f"`vistrain train --resume {run_dir}`")
        return "interrupted before the run folder was written; nothing to resume"
    if args.command == "cv" and out and Path(out).is_dir():
        return (f"interrupted: {out} keeps its finished folds; resume with "
                f"`vistrain cv {args.data} --resume --out {out}`")
    if args.command == "serve":
        return "stopped"
    return f"interrupted: vistrain {args.command} stopped; no half-written file is left, run it again"


def no_space_error(err: BaseException) -> OSError | None:
    """The ``ENOSPC`` :class:`OSError` in ``err`` or in what caused it (a library may wrap it)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            return err
        err = err.__cause__ or err.__context__
    return None


def no_space_line(err: OSError) -> str:
    """``no space left on MOUNT while writing FILE; free N MB ...``.  The file is the error's own
    name, else found in its traceback (:func:`_written_file`: a failed ``write()`` carries no
    name); N is at least 100 MB, or the size of the file being replaced when larger."""
    target = err.filename or _written_file(err.__traceback__)
    where = Path(target).absolute().parent if target else Path.cwd()
    while not where.exists() and where != where.parent:
        where = where.parent
    mount = where
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    try:
        free_mb = shutil.disk_usage(where).free // 2**20
    except OSError:
        free_mb = 0
    old = Path(target).stat().st_size if target and os.path.isfile(target) else 0
    need_mb = max(100, old // 2**20 + 1)
    name = os.fsdecode(target) if target else "a file"
    return (f"no space left on {mount} while writing {name}; free {need_mb} MB there "
            f"({free_mb} MB free now) and rerun")


def _written_file(tb) -> str | None:
    """The file a failed write was writing, from its traceback: ``path`` of the innermost
    :mod:`vistrain.fsutil` frame (every atomic write), else the innermost open file object in a
    frame's locals or on its ``self`` (a shard being written)."""
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        if frame.f_globals.get("__name__") == "vistrain.fsutil" and "path" in frame.f_locals:
            return str(frame.f_locals["path"])
    for frame in reversed(frames):
        values = list(frame.f_locals.values())
        values += list(getattr(frame.f_locals.get("self"), "__dict__", {}).values())
        for value in values:
            name = getattr(value, "name", None) if isinstance(value, io.IOBase) else None
            if isinstance(name, (str, os.PathLike)):
                return os.fspath(name)
    return None
