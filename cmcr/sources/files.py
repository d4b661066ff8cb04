"""Manifests of raw files (ImageNet train images, AudioSet clips, Objaverse clouds…) for extraction."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from cmcr.artifacts import ArtifactError


def list_files(folder: str | Path, patterns: Sequence[str]) -> pd.DataFrame:
    """Every file under ``folder`` matching one of ``patterns`` (recursive), in sorted order:
    ``path`` (absolute), ``id`` (path relative to the folder), ``parent`` (its folder's name)."""
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise ArtifactError(f"folder not found: {root}")
    files = sorted({p for pattern in patterns for p in root.rglob(pattern) if p.is_file()})
    if not files:
        raise ArtifactError(f"{root}: no files match {list(patterns)}")
    return pd.DataFrame({"path": [str(p) for p in files], "id": [str(p.relative_to(root)) for p in files],
                         "parent": [p.parent.name for p in files]})
