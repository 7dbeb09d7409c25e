"""One JSON record per benchmark run: ``benchmarks/results/<name>.json`` (committed, overwritten).

A record holds everything needed to judge a figure later: the command line, the git commit (and
its time), the date, the machine (CPU model from ``/proc/cpuinfo``, cores, RAM, the load average
before and after), the versions (torch, torchvision, onnxruntime, numpy, pillow, vistrain), the
thread settings, every repeat (not only the median), the derived figures (medians, ratios), each
figure's limit on the same machine in the same run with the fraction reached, and ``modules``:
the files whose code the figures measure.  ``tests/test_bench_records.py`` fails when one of
those files has a commit newer than the record's commit (the record is stale), and
``benchmarks/docs.py`` renders the tables of docs/benchmarks.md and the figures of README.md
from the records.

Usage in a benchmark (``benchmarks/`` is ``sys.path[0]`` when a script there runs)::

    from _record import Record, limit

    rec = Record("panel", modules=["vistrain/data/loader.py"])    # first thing in main()
    ...                                                           # (load average "before")
    rec.write(params=vars(args), repeats={"ours": [0.51, 0.49]},  # every repeat
              derived={"ours_img_s": 128.0},                      # medians, ratios
              limits={"ours": limit(128.0, 200.0, "img/s", "numpy copy of the same bytes")})

``Record(name, modules)`` notes the start (time, load average, argv); ``write`` adds the end and
writes the file atomically.  ``modules`` are the vistrain files whose code the figures
measure, chosen narrowly (not the package, not the benchmark script: a record goes stale when
the measured code changes, and a rebase of a benchmark's own commits must not make it stale).
``VISTRAIN_BENCH_RESULTS=DIR`` writes the record under DIR instead (a smoke run that must not
replace the committed result).  Example, runnable anywhere::

    >>> import os, tempfile, json
    >>> os.environ["VISTRAIN_BENCH_RESULTS"] = tempfile.mkdtemp()
    >>> r = Record("example", modules=[])
    >>> p = r.write(params={}, repeats={"a": [1.0, 2.0]}, derived={"a": 1.5},
    ...             limits={"a": limit(1.5, 3.0, "img/s", "twice as fast")})  # doctest: +ELLIPSIS
    record: .../example.json
    >>> json.loads(p.read_text())["limits"]["a"]["fraction"]
    0.5
"""
from __future__ import annotations

import datetime
import importlib.metadata
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
PACKAGES = ("torch", "torchvision", "onnxruntime", "numpy", "pillow", "vistrain")
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VISTRAIN_FEATURE_ENGINE")


def limit(value: float, bound: float, unit: str, how: str) -> dict:
    """A measured figure beside its limit (same machine, same run) and the fraction reached.

    >>> limit(50.0, 200.0, "img/s", "copy")["fraction"]
    0.25
    """
    fraction = value / bound if bound and math.isfinite(bound) else float("nan")
    return {"value": value, "limit": bound, "unit": unit, "fraction": fraction, "how": how}


def git(*args: str) -> str | None:
    """``git args`` in the repository, stripped stdout, or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def cpu_model() -> str:
    """The ``model name`` line of /proc/cpuinfo (platform.processor() elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def versions() -> dict[str, str | None]:
    """Installed versions; a module already imported gives its own (torch's local build tag)."""
    out = {}
    for name in PACKAGES:
        mod = sys.modules.get({"pillow": "PIL"}.get(name, name))
        version = getattr(mod, "__version__", None)
        if version is None:
            try:
                version = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                version = None
        out[name] = str(version) if version is not None else None
    out["python"] = platform.python_version()
    return out


def threads() -> dict:
    """Thread settings: the environment variables, and torch's counts if torch is loaded."""
    out = {k: os.environ.get(k) for k in THREAD_ENV}
    torch = sys.modules.get("torch")
    if torch is not None:
        out["torch_threads"] = torch.get_num_threads()
        out["torch_interop_threads"] = torch.get_num_interop_threads()
    return out


def clean(obj):
    """JSON-safe: NaN/inf become None, tuples lists, numpy scalars Python numbers."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


class Record:
    """The record of one benchmark run; create it first in ``main()``, call :meth:`write` last."""

    def __init__(self, name: str, modules: list[str], script: str | None = None):
        script_path = Path(script or sys.argv[0]).resolve()
        try:
            script_rel = script_path.relative_to(REPO).as_posix()
        except ValueError:
            script_rel = script_path.name
        self.name, self.modules = name, sorted(set(modules))
        self.command = shlex.join(["python", script_rel, *sys.argv[1:]])
        self.started = time.time()
        self.load_before = list(os.getloadavg())

    def git_info(self) -> dict:
        commit = git("rev-parse", "HEAD")
        if commit is None:
            return {"commit": None}
        dirty = git("status", "--porcelain", "--", *self.modules) or ""
        return {"commit": commit, "commit_time": int(git("log", "-1", "--format=%ct", "HEAD")),
                "dirty_modules": [line.split(maxsplit=1)[1] for line in dirty.splitlines()]}

    def data(self, params: dict, repeats, derived: dict, limits: dict, extra: dict | None) -> dict:
        """The record as a JSON-safe dict (``extra``: more top-level keys)."""
        utc = datetime.timezone.utc
        return clean({
            "name": self.name, "command": self.command, "argv": sys.argv,
            "git": self.git_info(), "modules": self.modules,
            "date": datetime.datetime.fromtimestamp(self.started, utc).isoformat(timespec="seconds"),
            "seconds": round(time.time() - self.started, 1),
            "machine": {"cpu": cpu_model(), "cores": os.cpu_count(),
                        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                        "ram_gib": ram_gib(), "platform": platform.platform(),
                        "load_before": self.load_before, "load_after": list(os.getloadavg())},
            "versions": versions(), "threads": threads(), "params": params,
            "repeats": repeats, "derived": derived, "limits": limits, **(extra or {})})

    def write(self, *, params: dict, repeats, derived: dict, limits: dict,
              extra: dict | None = None) -> Path:
        """Write ``<results>/<name>.json`` atomically (temporary file + rename); returns its path."""
        folder = Path(os.environ.get("VISTRAIN_BENCH_RESULTS") or RESULTS)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.name}.json"
        text = json.dumps(self.data(params, repeats, derived, limits, extra), indent=1,
                          allow_nan=False) + "\n"
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{self.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
        print(f"record: {path}", flush=True)
        return path
