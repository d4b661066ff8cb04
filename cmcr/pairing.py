"""Pairing two sets by an id column, never by row position.

Two sets that describe the same items — the two spaces' texts, CLIP's and ULIP's shared images, the
audio and images of retrieval pairs — can lose different items to load failures. Joining by id keeps
exactly the items present on both sides, in the first set's order; joining by row would silently
pair item i of one side with item i+1 of the other after the first failure.
"""

from __future__ import annotations

from typing import Any

#: id columns tried, in order, when pairing two spaces' sets of the same items (the first both tables have):
#: texts by ``text_id``, files by ``item_id`` or their ``path``. Retrieval pairs two different items (an
#: audio and an image) and is joined by ``pair_id`` explicitly.
ID_COLUMNS = {"text": ("text_id",), "file": ("item_id", "path")}


def id_column(first: Any, second: Any, modality: str) -> str | None:
    """The id column to pair two sets of ``modality`` items by: the first candidate both tables have (None if none)."""
    candidates = ID_COLUMNS["text" if modality == "text" else "file"]
    return next((c for c in candidates if c in first.columns and c in second.columns), None)


def pair_rows(first: Any, second: Any, key: str, label: str = "pairs") -> tuple[list[int], list[int], dict[str, int]]:
    """Rows of ``first`` and of ``second`` (DataFrames) whose ``key`` is on both sides, in ``first``'s order,
    and ``{"scored": pairs kept, "listed": distinct ids on either side}``. ``ValueError`` naming the set if
    a table lacks ``key`` or repeats an id."""
    for side, table in (("first", first), ("second", second)):
        if key not in table.columns:
            raise ValueError(f"{label} ({side}): no '{key}' column to pair by (columns: {list(table.columns)})")
        repeated = table[key][table[key].duplicated()].tolist()
        if repeated:
            raise ValueError(f"{label} ({side}): '{key}' repeats {repeated[:3]}; pairs are joined by it")
    second_row = {v: i for i, v in enumerate(second[key].tolist())}
    keep_first = [i for i, v in enumerate(first[key].tolist()) if v in second_row]
    keep_second = [second_row[first[key].iloc[i]] for i in keep_first]
    listed = len(set(first[key]) | set(second[key]))
    return keep_first, keep_second, {"scored": len(keep_first), "listed": listed}


def align_by_id(tables: dict[str, Any], modality: str, label: str = "shared items") -> tuple[dict[str, list[int]] | None, str]:
    """Rows of two spaces' tables describing the same items (e.g. the texts in CLIP and in CLAP), paired by
    their id column (:func:`id_column`): ``({space: rows}, key)``, or ``(None, key)`` when both sides already
    list the same ids in the same order. ``ValueError`` when the tables share no id column."""
    (first, a), (second, b) = tables.items()
    key = id_column(a, b, modality)
    if key is None:
        raise ValueError(f"{label}: no common id column {ID_COLUMNS['text' if modality == 'text' else 'file']} "
                         f"to pair {first}'s and {second}'s rows by")
    rows_a, rows_b, _ = pair_rows(a, b, key, label)
    if rows_a == list(range(len(a))) and rows_b == list(range(len(b))):
        return None, key
    return {first: rows_a, second: rows_b}, key
