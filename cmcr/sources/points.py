"""Point cloud files: plain ``.npy`` (N×3 / N×6), ModelNet ``.txt`` (comma-separated), and the
ULIP-Objaverse triplet ``.npy`` — a *pickled* 0-d object array holding a dict with ``xyz`` (and
``rgb``, captions, features). Unpickling runs arbitrary code from the file, so that format loads only
with an explicit trust switch; otherwise the refusal says why and how to allow it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PICKLE_REFUSAL = ("is a pickled .npy (the ULIP-Objaverse triplet format); unpickling runs arbitrary code from "
                  "the file, so it is refused. If the file comes from a source you trust, enable "
                  "trust_pickled_points")


def read_point_cloud(path: str | Path, *, trust_pickle: bool = False) -> np.ndarray:
    """N×3 (xyz) or N×6 (xyz + rgb) float32; ValueError naming the file for anything unusable."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    if path.suffix == ".txt":
        try:
            data = np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2)
        except ValueError as exc:
            raise ValueError(f"{path}: not a comma-separated point list ({exc})") from exc
        points = data[:, :3]
    else:
        try:
            data = np.load(path, allow_pickle=False)
        except ValueError as exc:
            if "allow_pickle" not in str(exc):
                raise ValueError(f"{path}: unreadable .npy ({exc})") from exc
            if not trust_pickle:
                raise ValueError(f"{path}: {PICKLE_REFUSAL}") from None
            data = np.load(path, allow_pickle=True)
        if data.dtype == object:
            record = data.item() if data.ndim == 0 else None
            if not isinstance(record, dict) or "xyz" not in record:
                raise ValueError(f"{path}: pickled .npy without an 'xyz' entry")
            xyz = np.asarray(record["xyz"], dtype=np.float32)
            rgb = record.get("rgb")
            points = np.concatenate([xyz, np.asarray(rgb, dtype=np.float32)], axis=1) if rgb is not None else xyz
        else:
            points = np.asarray(data, dtype=np.float32)
    if points.ndim != 2 or points.shape[1] not in (3, 6) or points.shape[0] == 0:
        raise ValueError(f"{path}: expected an N×3 or N×6 point cloud, got shape {points.shape}")
    if not np.isfinite(points[:, :3]).all():
        raise ValueError(f"{path}: point cloud has NaN or infinite coordinates")
    return points
