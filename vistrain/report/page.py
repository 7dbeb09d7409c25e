"""The one page of every report: typed blocks rendered by Jinja2 into ``templates/report.html``.

A section is a function that returns a list of blocks (:class:`Text`, :class:`Heading`,
:class:`Table`, :class:`Picture`, :class:`Bullets`, :class:`Preformatted`, :class:`Cards`); the
template turns them into HTML with autoescaping on, so no string read from a run's files (class
names, file names, messages) can become markup, and no section writes HTML by hand.  Pictures are
``data:image/png;base64`` URIs (:func:`picture`): the page refers to no other file or URL.

Example:
    >>> html = render_page("t", "Title", [Text("a <b>")], [Section("data", "Data", [Text("x")])])
    >>> '<section id="data">' in html and "a &lt;b&gt;" in html
    True
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import jinja2

from vistrain.evaluation.png import figure_png, png_data_uri


@dataclass(frozen=True)
class Text:
    """A paragraph; ``css``: ``note`` (grey), ``warn``, ``ok`` or ``fail``."""
    text: str
    css: str | None = None
    kind: str = "text"


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 3
    kind: str = "heading"


@dataclass(frozen=True)
class Cell:
    """A table cell with a style: ``css`` as for :class:`Text`, ``bold``, a ``detail`` in small."""
    text: str
    css: str | None = None
    bold: bool = False
    detail: str | None = None
    kind: str = "cell"


@dataclass(frozen=True)
class Table:
    """``rows`` of plain values (shown as text) or :class:`Cell`."""
    header: list[str]
    rows: list[list]
    kind: str = "table"


@dataclass(frozen=True)
class Picture:
    uri: str
    alt: str
    width: int | None = None
    kind: str = "picture"


@dataclass(frozen=True)
class Bullets:
    items: list[str]
    kind: str = "bullets"


@dataclass(frozen=True)
class Preformatted:
    text: str
    kind: str = "pre"


@dataclass(frozen=True)
class Card:
    """A gallery card: a picture (or a note when there is none) above a few lines of text."""
    picture: Picture | Text
    title: str
    lines: list[str]


@dataclass(frozen=True)
class Cards:
    cards: list[Card]
    kind: str = "cards"


@dataclass(frozen=True)
class Section:
    """One ``<section id=...>`` of the page: a stable id, a title and its blocks."""
    id: str
    title: str
    blocks: list = field(default_factory=list)


def note(text: str) -> Text:
    return Text(text, "note")


def fmt(v, digits: int = 4, missing: str = "-") -> str:
    """A number with ``digits`` decimals, ``missing`` for None/NaN, anything else as text."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return missing
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return f"{v:.{digits}f}"
    return str(v)


def picture(png: bytes, alt: str, width: int | None = None) -> Picture:
    """PNG bytes as an embedded picture."""
    return Picture(png_data_uri(png), alt, width)


def figure_picture(fig, alt: str, dpi: int = 90) -> Picture:
    """A matplotlib ``Figure`` as an embedded picture."""
    return picture(figure_png(fig, dpi=dpi), alt)


def file_picture(path: Path, alt: str | None = None) -> Picture:
    """A PNG file as an embedded picture (the page does not refer to the file)."""
    return picture(Path(path).read_bytes(), alt or Path(path).stem)


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("vistrain.report", "templates"),
                              autoescape=True, undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True)


def render_page(title: str, heading: str, intro: list, sections: list[Section], *,
                nav: bool = True) -> str:
    """The page: ``<title>``, ``<h1>``, the ``intro`` blocks, a table of contents, the sections."""
    return _environment().get_template("report.html").render(
        title=title, heading=heading, intro=intro, sections=sections, nav=nav)
