"""Input checks that run before compute and fail with a message naming the input and the problem."""

from __future__ import annotations

import math

import warnings

import numpy as np
import torch


class EmbeddingError(ValueError):
    """An embedding matrix is unusable (wrong shape, non-finite values, empty, wrong width...)."""


ArrayLike = torch.Tensor | np.ndarray


def as_tensor(x: ArrayLike) -> torch.Tensor:
    """Zero-copy tensor view of an array; a read-only memory map stays lazily paged and is only read."""
    if isinstance(x, torch.Tensor):
        return x
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.asarray(x))


def check_matrix(x: ArrayLike, name: str, *, dim: int | None = None, allow_empty: bool = False,
                 chunk_rows: int = 65536) -> None:
    """Check that ``x`` is a finite 2-D float matrix (of width ``dim`` if given).

    Works on tensors, arrays and memory-mapped arrays; scans in row chunks so a memory-mapped matrix
    of millions of rows is checked without loading it whole.
    """
    shape = tuple(x.shape)
    if len(shape) != 2:
        raise EmbeddingError(f"{name}: expected a 2-D matrix (items × dim), got shape {shape}")
    if shape[0] == 0 and not allow_empty:
        raise EmbeddingError(f"{name}: is empty (0 rows)")
    if dim is not None and shape[1] != dim:
        raise EmbeddingError(f"{name}: has dimension {shape[1]}, expected {dim}")
    is_float = x.dtype.is_floating_point if isinstance(x, torch.Tensor) else np.issubdtype(x.dtype, np.floating)
    if not is_float:
        raise EmbeddingError(f"{name}: expected floating-point values, got dtype {x.dtype}")
    for start in range(0, shape[0], chunk_rows):
        block = x[start:start + chunk_rows]
        # A finite sum means every value is finite (an inf or a NaN makes the sum inf or NaN), and one pass of
        # sum is ~10x faster than isfinite().all(); only a non-finite sum (a bad value, or an overflow of
        # huge finite values) needs the elementwise check.
        if isinstance(x, torch.Tensor):
            total = block.detach().sum()
        else:
            with np.errstate(over="ignore", invalid="ignore"):  # an overflow here only means "check elementwise"
                total = np.sum(block)
        if math.isfinite(float(total)):
            continue
        finite = torch.isfinite(block).all().item() if isinstance(x, torch.Tensor) else bool(np.isfinite(block).all())
        if not finite:
            block_t = as_tensor(block)
            bad = (~torch.isfinite(block_t)).any(dim=1).nonzero()[0, 0].item() + start
            raise EmbeddingError(f"{name}: contains NaN or infinite values (first bad row {bad})")


def check_unit_norm(x: ArrayLike, name: str, *, atol: float = 1e-3, chunk_rows: int = 65536) -> None:
    """Check that every row of ``x`` is L2-normalised (encoders of every MCR space return unit vectors)."""
    for start in range(0, x.shape[0], chunk_rows):
        block = x[start:start + chunk_rows]
        block_t = as_tensor(block)
        norms = torch.linalg.vector_norm(block_t.float(), dim=1)
        off = (norms - 1).abs() > atol
        if off.any():
            row = off.nonzero()[0, 0].item()
            raise EmbeddingError(
                f"{name}: row {row + start} has L2 norm {norms[row].item():.4f}; "
                "expected L2-normalised embeddings (as every MCR encoder returns)"
            )


def check_same_rows(a: ArrayLike, a_name: str, b: ArrayLike, b_name: str) -> None:
    """Paired matrices must have the same number of rows (item i of one is item i of the other)."""
    if a.shape[0] != b.shape[0]:
        raise EmbeddingError(f"{a_name} has {a.shape[0]} rows but {b_name} has {b.shape[0]}; they must be paired row by row")
