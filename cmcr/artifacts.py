"""Artifacts between stages: NPY matrices (memory-mappable), Parquet tables, JSON metrics, checkpoints.

Every write goes to a temporary file in the destination folder and is renamed into place only when
complete, so a killed stage never leaves a half-written file that DVC or a rerun would trust.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class ArtifactError(ValueError):
    """A stage input is missing or inconsistent (the message names the file and the problem)."""


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, on error delete it.

    The file gets the permissions a plainly created file would (0666 less the umask), not ``mkstemp``'s
    0600, so a group sharing the project on a cluster can read the artifacts.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # np.save / writers may have replaced the file: set the mode on what is there
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success it replaces ``path`` whole."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)


def save_npy(path: str | Path, array: Any) -> Path:
    """Atomically write a float32 (or given-dtype) matrix as ``.npy``."""
    array = np.ascontiguousarray(array.detach().cpu().numpy() if hasattr(array, "detach") else array)
    with atomic_path(path, ".npy") as tmp:
        np.save(tmp, array)
    log.info("wrote %s %s %s", path, array.shape, array.dtype)
    return Path(path)


@contextlib.contextmanager
def npy_writer(path: str | Path, shape: tuple[int, ...], dtype: Any = np.float32) -> Iterator[np.ndarray]:
    """A writable ``.npy`` memory map for outputs larger than RAM; renamed into place when the block ends."""
    with atomic_path(path, ".npy") as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        yield out
        out.flush()
        del out
    log.info("wrote %s %s", path, shape)


def load_npy(path: str | Path, *, mmap: bool = True, dim: int | None = None) -> np.ndarray:
    """Read a ``.npy`` matrix (memory-mapped by default); clear errors for missing or malformed files."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"embedding file not found: {path}")
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as exc:
        raise ArtifactError(f"{path}: not a plain numeric .npy matrix ({exc})") from exc
    if array.ndim != 2:
        raise ArtifactError(f"{path}: expected a 2-D matrix (items × dim), got shape {array.shape}")
    if dim is not None and array.shape[1] != dim:
        raise ArtifactError(f"{path}: has dimension {array.shape[1]}, expected {dim}")
    log.info("read %s %s %s", path, array.shape, array.dtype)
    return array


def write_parquet(path: str | Path, frame: Any) -> Path:
    """Atomically write a pandas DataFrame as Parquet."""
    with atomic_path(path, ".parquet") as tmp:
        frame.to_parquet(tmp, index=False)
    log.info("wrote %s (%d rows)", path, len(frame))
    return Path(path)


def read_parquet(path: str | Path, *, rows: int | None = None, columns: list[str] | None = None) -> Any:
    """Read a Parquet table, checking required ``columns`` and (if given) the row count of its matrix."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"table not found: {path}")
    frame = pd.read_parquet(path)
    missing = [c for c in (columns or []) if c not in frame.columns]
    if missing:
        raise ArtifactError(f"{path}: missing column(s) {missing}; has {list(frame.columns)}")
    if rows is not None and len(frame) != rows:
        raise ArtifactError(f"{path}: has {len(frame)} rows but its embedding matrix has {rows}; they must match row by row")
    return frame


def write_json(path: str | Path, data: Any) -> Path:
    """Atomically write JSON (sorted keys, trailing newline: stable diffs across branches)."""
    with atomic_path(path, ".json") as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    log.info("wrote %s", path)
    return Path(path)


def load_torch(path: str | Path, fmt: str, what: str, map_location: Any = "cpu") -> dict:
    """A project checkpoint's payload (``torch.load(weights_only=True)``: plain data and tensors only), checked to be
    of format ``fmt``: FileNotFoundError / ValueError naming the file and what was expected (``what``)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise ValueError(f"{path}: not a cmcr {what} (expected format {fmt!r})")
    return payload


def save_torch(path: str | Path, payload: Any) -> Path:
    """Atomically ``torch.save`` a payload, byte-reproducibly.

    Saved through a buffer: torch names the archive inside after the file, and the temporary file's
    random name would otherwise make identical checkpoints differ byte for byte.
    """
    import torch

    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_path(path, ".pt") as tmp:
        tmp.write_bytes(buffer.getvalue())
    log.info("wrote %s", path)
    return Path(path)


def save_embedding_set(folder: str | Path, name: str, embeddings: Any, table: Any) -> None:
    """Write ``<name>.npy`` (N×d float32) and ``<name>.parquet`` (N rows describing them) atomically."""
    rows = embeddings.shape[0]
    if len(table) != rows:
        raise ArtifactError(f"{name}: table has {len(table)} rows but the matrix has {rows}")
    save_npy(Path(folder) / f"{name}.npy", np.asarray(embeddings, dtype=np.float32))
    write_parquet(Path(folder) / f"{name}.parquet", table)


def load_embedding_set(folder: str | Path, name: str, *, columns: list[str] | None = None,
                       dim: int | None = None) -> tuple[np.ndarray, Any]:
    """Read ``<name>.npy`` (memory-mapped) and ``<name>.parquet``, checking they have the same rows."""
    matrix = load_npy(Path(folder) / f"{name}.npy", dim=dim)
    table = read_parquet(Path(folder) / f"{name}.parquet", rows=matrix.shape[0], columns=columns)
    return matrix, table
