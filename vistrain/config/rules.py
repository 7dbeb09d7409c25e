"""Range rules of the settings as data: one object per rule, read by validation, ``--help`` and
the JSON Schema (``vistrain train --print-schema``) alike.

A rule tests a value that already has the setting's type (:meth:`test`), says in words what is
allowed (``text``: the end of the one-line error and of the flag's help) and gives the same
constraint as JSON Schema keywords (:meth:`schema`), so a schema-driven form or editor refuses
what ``TrainConfig.validate`` refuses.

Example:
    >>> r = Range(0, 1, high_open=True, text="a fraction in [0, 1)")
    >>> r.test(0.5), r.test(1.0), r.schema()
    (True, False, {'minimum': 0, 'exclusiveMaximum': 1})
    >>> Items(Range(0, 255), lengths=(3,), text="3 values").test([0, 128, 255])
    True
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Range:
    """A number in ``[low, high]`` (either end open with ``low_open``/``high_open``, absent when
    None); ``finite``: no infinity (NaN never passes a comparison, so it never passes a rule)."""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    finite: bool = False
    text: str = ""

    def test(self, v) -> bool:
        if isinstance(v, float) and (math.isnan(v) or (self.finite and math.isinf(v))):
            return False
        if self.low is not None and not (v > self.low if self.low_open else v >= self.low):
            return False
        return self.high is None or (v < self.high if self.high_open else v <= self.high)

    def schema(self) -> dict:
        out = {}
        if self.low is not None:
            out["exclusiveMinimum" if self.low_open else "minimum"] = self.low
        if self.high is not None:
            out["exclusiveMaximum" if self.high_open else "maximum"] = self.high
        return out


@dataclass(frozen=True)
class Items:
    """A list whose every item passes ``each``, with one of ``lengths`` items (None: any length
    of at least ``min_items``)."""
    each: Range | None = None
    lengths: tuple[int, ...] | None = None
    min_items: int = 0
    text: str = ""

    def test(self, v) -> bool:
        if self.lengths is not None and len(v) not in self.lengths:
            return False
        return len(v) >= self.min_items and all(self.each is None or self.each.test(x) for x in v)

    def schema(self) -> dict:
        out = {"items": self.each.schema()} if self.each is not None and self.each.schema() else {}
        if self.lengths is not None and len(self.lengths) == 1:
            out.update(minItems=self.lengths[0], maxItems=self.lengths[0])
        elif self.lengths is not None:
            out["anyOf"] = [{"minItems": n, "maxItems": n} for n in self.lengths]
        elif self.min_items:
            out["minItems"] = self.min_items
        return out


@dataclass(frozen=True)
class Pattern:
    """Text that matches ``regex`` as a whole."""
    regex: str
    text: str = ""

    def test(self, v) -> bool:
        return re.fullmatch(self.regex, v, flags=re.DOTALL) is not None

    def schema(self) -> dict:
        return {"pattern": f"^(?:{self.regex})$"}


Rule = Range | Items | Pattern
