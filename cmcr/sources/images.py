"""Image files: one reader for every encoder, with the crop of an object proposal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cmcr.items import Item, as_item


def load_image(path: str | Path | Item, box: tuple[float, float, float, float] | None = None) -> Any:
    """The image at ``path`` as an RGB ``PIL.Image`` (grey / palette / RGBA converted), cropped to ``box``
    (x1, y1, x2, y2 in pixels; an :class:`~cmcr.items.Item` may carry it) when given. A box must lie inside
    the image and have a positive area; bounds are rounded to whole pixels. Raises ``ValueError`` /
    ``OSError`` naming the file for anything unusable (the caller records it as a per-item failure)."""
    from PIL import Image

    item = as_item(path)
    box = box if box is not None else item.box
    with Image.open(item.path) as img:
        rgb = img.convert("RGB")  # decodes now: a truncated file raises OSError here, inside the with
    if box is not None:
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        if not (0 <= x1 < x2 <= rgb.width and 0 <= y1 < y2 <= rgb.height):
            raise ValueError(f"{item.path}: box {tuple(box)} is not inside the {rgb.width}×{rgb.height} image "
                             "(x1 < x2, y1 < y2, in pixels)")
        rgb = rgb.crop((x1, y1, x2, y2))
    return rgb
