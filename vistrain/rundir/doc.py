"""Typed JSON documents: frozen dataclasses that read a run file with :meth:`Doc.from_doc` and
write it back with :meth:`Doc.to_doc`, one generic pair for every part of a run folder.

A field is declared with :func:`slot`: how its value is coerced on reading (``read``), the key it
is stored under when that differs from its name (``key``), whether it is left out of the document
when it holds nothing (``omit=True``: None; ``omit="empty"``: None, ``{}``, ``[]`` or a record
that is false, such as an empty strategy; for a key the writer adds only sometimes, while an
explicit null the writer writes stays null) and whether it gathers every key no other field
claims (``rest``: an open-ended mapping such as a strategy's settings).  Reading coerces instead
of trusting: a number that is not a number becomes ``None``, a name that is not a string becomes
its ``str()``, so a hand-edited file cannot smuggle objects where text is expected.  A key absent
from the document leaves the field at its default.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Row(Doc):
    ...     n: int | None = slot(to_int)
    ...     note: str | None = slot(to_text, omit=True)
    ...     more: dict = slot(rest=True)
    >>> row = Row.from_doc({"n": "7", "extra": 1})
    >>> row, row.to_doc()
    (Row(n=None, note=None, more={'extra': 1}), {'n': None, 'extra': 1})
"""
from __future__ import annotations

from dataclasses import MISSING, Field, field, fields

import numpy as np


# ---- coercion of single values -----------------------------------------------------------------
def to_num(v) -> float | None:
    """A real number (bools are not), else None."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def to_int(v) -> int | None:
    """An integer (bools are not), else None."""
    return int(v) if isinstance(v, int) and not isinstance(v, bool) else None


def to_text(v) -> str | None:
    return None if v is None else str(v)


def to_bool(v) -> bool | None:
    return v if isinstance(v, bool) else None


def to_dict(v) -> dict:
    return {str(k): x for k, x in v.items()} if isinstance(v, dict) else {}


def to_list(v) -> list:
    return list(v) if isinstance(v, list) else []


def texts(v) -> list[str]:
    return [str(x) for x in to_list(v)]


def opt_dict(v) -> dict | None:
    """A mapping, or None for anything else (a null the writer wrote stays null)."""
    return to_dict(v) if isinstance(v, dict) else None


def opt_list(v) -> list | None:
    return list(v) if isinstance(v, list) else None


def same(v):
    """The value as the document holds it (an open-ended entry: text, list or mapping)."""
    return v


def many(read):
    """A list of ``read(x)`` for every object ``x`` of a JSON list (others are skipped)."""
    return lambda v: [read(x) for x in to_list(v) if isinstance(x, dict)]


def each(read):
    """A mapping of ``read(x)`` for every object ``x`` of a JSON object (others are skipped)."""
    return lambda v: {k: read(x) for k, x in to_dict(v).items() if isinstance(x, dict)}


def values_of(read):
    """A mapping of ``read(x)`` for every value of a JSON object."""
    return lambda v: {k: read(x) for k, x in to_dict(v).items()}


# ---- declaring and converting fields -----------------------------------------------------------
def slot(read=same, *, key: str | None = None, omit: bool | str = False, rest: bool = False,
         default=None, factory=None) -> Field:
    """A dataclass field of a :class:`Doc` (see the module docstring).  Its default is None,
    ``default``, or ``factory()``; a ``rest`` field defaults to ``{}``."""
    meta = {"read": read, "key": key, "omit": omit, "rest": rest}
    if rest:
        factory = dict
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _key(f: Field) -> str:
    return f.metadata.get("key") or f.name


def _omitted(f: Field, v) -> bool:
    omit = f.metadata.get("omit")
    return bool(omit) and (v is None or (omit == "empty" and isinstance(v, (dict, list, Doc)) and not v))


def plain(v):
    """``v`` as JSON values: a :class:`Doc` as its document, arrays and tuples as lists."""
    if isinstance(v, Doc):
        return v.to_doc()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    return v


class Doc:
    """The generic ``from_doc`` / ``to_doc`` of a dataclass whose fields are :func:`slot` s (a
    plain field is stored under its name, read as it is, and always written)."""

    @classmethod
    def from_doc(cls, d):
        return cls(**cls.fields_of(d))

    @classmethod
    def fields_of(cls, d) -> dict:
        """The keyword arguments of ``cls`` read from the document ``d`` (not an object: none)."""
        d = d if isinstance(d, dict) else {}
        claimed = {_key(f) for f in fields(cls) if not f.metadata.get("rest")}
        out = {}
        for f in fields(cls):
            if f.metadata.get("rest"):
                out[f.name] = {str(k): v for k, v in d.items() if k not in claimed}
            elif _key(f) in d:
                out[f.name] = f.metadata.get("read", same)(d[_key(f)])
            elif f.default is MISSING and f.default_factory is MISSING:
                out[f.name] = None
        return out

    def to_doc(self) -> dict:
        """The JSON document of this record (what ``from_doc`` reads back)."""
        out, rest = {}, {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.metadata.get("rest"):
                rest = plain(v)
            elif not _omitted(f, v):
                out[_key(f)] = plain(v)
        out.update((k, v) for k, v in rest.items() if k not in out)
        return out
