"""Which images belong together: a group per image, for splits that keep each group in one part.

Near-identical shots of one object (one patient, one production batch, one camera session) must
never straddle train and test, or the test score measures recall of the object, not
generalisation.  The groups come from a CSV file (``data.groups``, ``--groups FILE.csv``: columns
``file,group``, ``file`` relative to the data folder or a file name unique in it) or from a
regular expression on each image's path relative to the data folder (``data.group_regex``,
``--group-regex``: the first capture group, or the whole match).

Example:
    >>> from vistrain.data.groups import groups_from_regex
    >>> groups_from_regex(r"(patient\\d+)_", ["cat/patient1_a.png", "cat/patient1_b.png", "dog/patient2_a.png"])
    ['patient1', 'patient1', 'patient2']
"""
from __future__ import annotations

import csv
import time
from collections import Counter
from pathlib import Path

import regex

from vistrain.errors import DataError

# A pattern is the user's: one with nested repeats ('^(a+)+$') backtracks exponentially on a long
# name.  The `regex` package (re-compatible syntax, version V0) stops a match after a time limit.
MATCH_LIMIT_S = 0.5    # one name (CPU seconds); a sane pattern takes microseconds on a path
TOTAL_LIMIT_S = 30.0   # all names together


def relative_names(index) -> list[str]:
    """Each image's path relative to the data folder, with ``/`` separators."""
    return [Path(p).relative_to(index.root).as_posix() for p in index.paths]


def groups_from_regex(pattern: str, names: list[str]) -> list[str]:
    """The group of each of ``names`` (relative paths): the pattern's first capture group, or the
    whole match when it has none.  A name the pattern does not match is an error, and so is a
    pattern that takes over :data:`MATCH_LIMIT_S` on one name (or :data:`TOTAL_LIMIT_S` on all)."""
    rx = regex.compile(pattern, flags=regex.V0)
    groups, unmatched = [], []
    deadline = time.monotonic() + TOTAL_LIMIT_S
    for name in names:
        limit = min(MATCH_LIMIT_S, max(deadline - time.monotonic(), 0.001))
        try:
            m = rx.search(name, timeout=limit)
        except TimeoutError:
            raise DataError(f"--group-regex '{pattern}' took over {limit:.3g} s on {name!r} (a pattern "
                            "with nested repeats such as (a+)+ backtracks without end); simplify it, "
                            "e.g. (a+) instead of (a+)+, or give --groups FILE.csv") from None
        if m is None:
            unmatched.append(name)
            continue
        groups.append(m.group(1) if rx.groups else m.group(0))
    if unmatched:
        raise DataError(f"--group-regex {pattern!r} matches no part of {len(unmatched)} of {len(names)} "
                        f"image paths (e.g. {unmatched[0]!r}); change the pattern or give --groups FILE.csv")
    return groups


def read_group_table(path: str | Path) -> dict[str, str]:
    """``{file: group}`` from a CSV file with a header row naming the columns ``file`` and ``group``."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: cannot read the groups file ({err}); give a CSV with columns file,group") from None
    if not rows or not {"file", "group"} <= set(rows[0]):
        raise DataError(f"{path}: the groups file needs a header row with the columns file and group "
                        "(one row per image: file relative to the data folder, its group)")
    table: dict[str, str] = {}
    for row in rows:
        file, group = (row.get("file") or "").strip(), (row.get("group") or "").strip()
        if file and group:
            table[Path(file).as_posix()] = group
    return table


def groups_from_table(table: dict[str, str], names: list[str], source: str) -> list[str]:
    """The group of each of ``names`` (relative paths), looked up by relative path, else by file
    name when that name is unique among ``names``.  Every image must have a group."""
    base_counts = Counter(Path(n).name for n in names)
    groups, missing = [], []
    for name in names:
        group = table.get(name)
        if group is None and base_counts[Path(name).name] == 1:
            group = table.get(Path(name).name)
        if group is None:
            missing.append(name)
        groups.append(group)
    if missing:
        raise DataError(f"{source}: {len(missing)} of {len(names)} images have no group (e.g. {missing[0]!r}); "
                        "add a row file,group for each, or use --group-regex")
    return groups


def image_groups(index, data_cfg) -> list[str] | None:
    """The group of each image of ``index`` (a scanned folder) as ``data_cfg`` (the config's data
    section) asks: from ``data_cfg.groups`` (CSV) or ``data_cfg.group_regex``; ``None`` without."""
    names = relative_names(index)
    if data_cfg.groups:
        return groups_from_table(read_group_table(data_cfg.groups), names, str(data_cfg.groups))
    if data_cfg.group_regex:
        return groups_from_regex(data_cfg.group_regex, names)
    return None
