"""The one item type every encoder's loader accepts.

An extraction item is a file (an image, a clip, a point cloud) with an optional crop ``box`` — an
object proposal ``(x1, y1, x2, y2)`` in pixels of the image — and optional descriptive ``meta``; a
text item is the text itself (a ``str``). Plain paths (``str`` / ``Path``) are accepted wherever an
:class:`Item` is and mean "the whole file". Whatever the source (demo world, a user's manifest, the
CLI), items reach the encoders as these, so an object proposal works for CLIP, ULIP's image tower and
the demo stand-in alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Item:
    """A file to embed: ``path``, an optional crop ``box`` (x1, y1, x2, y2, pixels) and free ``meta``."""

    path: str
    box: tuple[float, float, float, float] | None = None
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", str(self.path))
        if self.box is not None:
            box = tuple(float(v) for v in self.box)
            if len(box) != 4 or not all(math.isfinite(v) for v in box):
                raise ValueError(f"{self.path}: a box is four finite numbers (x1, y1, x2, y2), got {self.box!r}")
            object.__setattr__(self, "box", box)

    def __str__(self) -> str:  # what failure tables and logs show; also part of the shards' run key
        if self.box is None:
            return self.path
        return f"{self.path}#box={','.join(f'{v:g}' for v in self.box)}"


def as_item(item: Item | str | Path) -> Item:
    """``item`` as an :class:`Item` (a plain path means the whole file)."""
    if isinstance(item, Item):
        return item
    if isinstance(item, (str, Path)):
        return Item(str(item))
    raise TypeError(f"an item is an Item, a path or (for text) a string, got {type(item).__name__}: {item!r}")


def file_of(item: Item | str | Path, modality: str) -> str:
    """The path of a whole-file item (audio, point cloud); ``ValueError`` if it carries a crop box."""
    item = as_item(item)
    if item.box is not None:
        raise ValueError(f"{item.path}: a box crops images only, but this is a {modality} item")
    return item.path


#: manifest columns that make an image row an object proposal (a crop of the image)
BOX_COLUMNS = ("x1", "y1", "x2", "y2")


def manifest_items(table: Any, column: str, modality: str) -> list[Item | str]:
    """The items of a manifest (a DataFrame): the text of ``column`` for text; for files an :class:`Item`
    of ``column``'s path, cropped to ``x1, y1, x2, y2`` when an image manifest has those columns (object
    proposals: one row per box)."""
    if column not in table.columns:
        raise ValueError(f"manifest has no column {column!r} (columns: {list(table.columns)})")
    if modality == "text":
        return [str(x) for x in table[column]]
    if modality == "image" and all(c in table.columns for c in BOX_COLUMNS):
        return [Item(str(path), (x1, y1, x2, y2))
                for path, x1, y1, x2, y2 in table[[column, *BOX_COLUMNS]].itertuples(index=False)]
    return [Item(str(path)) for path in table[column]]
