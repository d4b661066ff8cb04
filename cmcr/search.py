"""An index of items embedded in the connected space, and top-k search over it in bounded memory.

An index is a folder:

- ``embeddings.npy`` — N×d float32, L2-normalised rows in the connected space (memory-mappable);
- ``items.parquet`` — row i's ``id`` and ``item`` (its path, or the text), and every other column of the manifest
  it was built from (e.g. class columns), which search results carry;
- ``failures.parquet`` — items that could not be embedded (id, item, reason);
- ``index.json`` — the modality, the model's identity (checkpoint digest, encoder identities: weights
  digest and settings) and the row count; a search with another model is refused;
- ``raw/`` — each space's own embeddings, written through the sharded, resumable extraction
  (:func:`cmcr.extraction.extract_sharded`): a killed ``cmcr index`` resumes where it stopped.

An index can also be built from a space's precomputed embeddings (:func:`index_embeddings`: setup byo, or
embeddings from another tool), and searched with precomputed query embeddings: both are projected by the model, no
encoder needed.

:func:`search` streams over the index in chunks of rows, keeping a running top-k, so a million-row index
needs no more RAM than one chunk (the NPY is memory-mapped).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from cmcr.api import ConnectedModel
from cmcr.artifacts import ArtifactError, atomic_path, load_npy, npy_writer, read_parquet, write_json, write_parquet
from cmcr.extraction import extract_sharded
from cmcr.pairing import pair_rows

INDEX_FORMAT = "cmcr.index/1"


def build_index(model: ConnectedModel, modality: str, items: Sequence[Any], ids: Sequence[str], out_dir: str | Path, *,
                shard_size: int = 50_000, batch_size: int = 64, num_workers: int = 0, max_failure_rate: float = 0.01,
                project_chunk: int = 65_536, progress: bool = True, rate_option: str = "max_failure_rate",
                columns: pd.DataFrame | None = None) -> dict[str, Any]:
    """Embed ``items`` of ``modality`` into an index folder (see the module docstring); returns ``index.json``.
    More failures than ``max_failure_rate`` stop it (:class:`~cmcr.extraction.FailureRateError` naming
    ``rate_option``). ``columns``: more columns per item (a manifest's, row i for item i), kept in
    ``items.parquet`` for the rows indexed."""
    out_dir = Path(out_dir)
    if len(set(ids)) != len(ids):
        raise ArtifactError(f"{out_dir}: item ids repeat; every item needs its own id")
    spaces = model.spaces_for(modality)
    raw: dict[str, tuple[np.ndarray, pd.DataFrame]] = {}
    for space in spaces:
        name = f"{space}_{modality}"
        extract_sharded(model.spaces[space], modality, list(items), list(ids), out_dir / "raw", name,
                        shard_size=shard_size, batch_size=batch_size, num_workers=num_workers, progress=progress,
                        max_failure_rate=max_failure_rate, rate_option=rate_option)
        raw[space] = (load_npy(out_dir / "raw" / f"{name}.npy"), read_parquet(out_dir / "raw" / f"{name}.parquet"))
    first = spaces[0]
    table = raw[first][1]
    rows = {first: np.arange(len(table))}
    for space in spaces[1:]:  # the shared modality under `mean`: items both spaces embedded, joined by id
        keep_first, keep_other, _ = pair_rows(raw[first][1], raw[space][1], "id", f"{out_dir} raw embeddings")
        rows = {s: np.asarray(r)[keep_first] for s, r in rows.items()} | {space: np.asarray(keep_other)}
        table = raw[first][1].iloc[rows[first]].reset_index(drop=True)
    n = len(table)
    with npy_writer(out_dir / "embeddings.npy", (n, model.dim)) as dest:
        for start in tqdm(range(0, n, project_chunk), desc="project", unit="chunk", disable=not progress):
            stop = min(start + project_chunk, n)
            projected = {s: model.project(s, modality, raw[s][0][rows[s][start:stop]]) for s in spaces}
            dest[start:stop] = model.combine(projected)
    item_text = [str(items[int(p)]) for p in table["position"]]
    kept = pd.DataFrame({"id": table["id"].astype(str), "item": item_text})
    if columns is not None:
        more = columns.drop(columns=[c for c in ("id", "item") if c in columns.columns])
        kept = pd.concat([kept, more.iloc[table["position"].to_numpy()].reset_index(drop=True)], axis=1)
    write_parquet(out_dir / "items.parquet", kept)
    failures = [pd.read_parquet(out_dir / "raw" / f"{s}_{modality}.failures.parquet") for s in spaces]
    failed = pd.concat(failures, ignore_index=True).drop_duplicates("id") if failures else pd.DataFrame()
    write_parquet(out_dir / "failures.parquet", failed.assign(item=[str(items[int(p)]) for p in failed["position"]])
                  if len(failed) else pd.DataFrame(columns=["id", "position", "reason", "item"]))
    info = {"format": INDEX_FORMAT, "rows": n, "failed": int(len(failed)), "items": len(items),
            "model": model.identity(modality)}
    write_json(out_dir / "index.json", info)
    return info


def index_embeddings(model: ConnectedModel, space: str, modality: str, embeddings: np.ndarray, table: pd.DataFrame,
                     out_dir: str | Path, *, id_column: str | None = None, project_chunk: int = 65_536,
                     progress: bool = True) -> dict[str, Any]:
    """An index of ``space``'s precomputed embeddings of ``modality`` (N×d, row i described by ``table``'s row i):
    projected by ``model`` (:meth:`ConnectedModel.project`), with ``table``'s columns in ``items.parquet``
    (``id``: ``id_column``'s values, else the row number; ``item``: a ``path`` column's, else the id). No encoder is
    needed; ``index.json`` records the model and that the rows were precomputed in ``space``."""
    out_dir = Path(out_dir)
    n = embeddings.shape[0]
    if len(table) != n:
        raise ArtifactError(f"{out_dir}: {n} embeddings but {len(table)} table rows; they must match row by row")
    if id_column is not None and id_column not in table.columns:
        raise ArtifactError(f"{out_dir}: no id column {id_column!r} in the table; it has {list(table.columns)}")
    ids = table[id_column].astype(str) if id_column else pd.Series(np.arange(n)).astype(str)
    if ids.duplicated().any():
        raise ArtifactError(f"{out_dir}: item ids repeat (column {id_column!r}); every item needs its own id")
    out_dir.mkdir(parents=True, exist_ok=True)
    with npy_writer(out_dir / "embeddings.npy", (n, model.dim)) as dest:
        for start in tqdm(range(0, n, project_chunk), desc="project", unit="chunk", disable=not progress):
            dest[start:start + project_chunk] = model.project(space, modality, embeddings[start:start + project_chunk])
    item = table["path"].astype(str) if "path" in table.columns else ids
    more = table.drop(columns=[c for c in ("id", "item") if c in table.columns]).reset_index(drop=True)
    write_parquet(out_dir / "items.parquet", pd.concat([pd.DataFrame({"id": ids.to_numpy(), "item": item.to_numpy()}),
                                                        more], axis=1))
    write_parquet(out_dir / "failures.parquet", pd.DataFrame(columns=["id", "position", "reason", "item"]))
    info = {"format": INDEX_FORMAT, "rows": n, "failed": 0, "items": n, "precomputed": space,
            "model": model.identity(modality)}
    write_json(out_dir / "index.json", info)
    return info


def open_index(index_dir: str | Path, model: ConnectedModel | None = None) -> tuple[np.ndarray, pd.DataFrame, dict]:
    """The index's embeddings (memory-mapped), items and info; with ``model``, refuse an index built with another
    checkpoint or other encoders (ArtifactError naming what differs)."""
    index_dir = Path(index_dir)
    info_path = index_dir / "index.json"
    if not info_path.is_file():
        raise ArtifactError(f"{index_dir}: not a cmcr index (no index.json; build one with `cmcr index`)")
    info = json.loads(info_path.read_text())
    if info.get("format") != INDEX_FORMAT:
        raise ArtifactError(f"{info_path}: format {info.get('format')!r}, expected {INDEX_FORMAT!r}")
    if model is not None:
        built, now = info["model"], model.identity(info["model"]["modality"])
        for key in ("graph", "connection", "checkpoint", "shared_space"):
            if built.get(key) != now.get(key):
                raise ArtifactError(f"{index_dir}: built with {key} {built.get(key)!r}, but this model has "
                                    f"{now.get(key)!r}; rebuild the index with this model (`cmcr index`)")
        for space, identity in built["spaces"].items():
            current = now["spaces"].get(space)
            if current is None or current["weights"] != identity["weights"] or current["settings"] != identity["settings"]:
                raise ArtifactError(f"{index_dir}: built with another {space} encoder (weights or settings differ); "
                                    "rebuild the index with this model (`cmcr index`)")
    embeddings = load_npy(index_dir / "embeddings.npy")
    items = read_parquet(index_dir / "items.parquet", rows=embeddings.shape[0])
    return embeddings, items, info


def top_k(queries: np.ndarray, embeddings: np.ndarray, k: int, chunk: int = 65_536) -> tuple[np.ndarray, np.ndarray]:
    """Cosine top-k of each query row over ``embeddings`` (rows L2-normalised), streamed in chunks of rows:
    ``(scores, rows)``, each Q×k, best first; ties keep the lower row first. Never holds more than
    ``Q × (chunk + k)`` scores."""
    q = torch.from_numpy(np.array(queries, dtype=np.float32))  # writable copy
    n = embeddings.shape[0]
    k = min(k, n)
    best_scores = torch.full((q.shape[0], 0), -float("inf"))
    best_rows = torch.zeros((q.shape[0], 0), dtype=torch.long)
    for start in range(0, n, chunk):
        block = torch.from_numpy(np.array(embeddings[start:start + chunk], dtype=np.float32))  # one chunk, copied
        scores = q @ block.T
        rows = torch.arange(start, start + block.shape[0]).expand(q.shape[0], -1)
        scores = torch.cat([best_scores, scores], dim=1)
        rows = torch.cat([best_rows, rows], dim=1)
        # stable order: by score descending, then by row ascending (earlier rows come first in `rows`)
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
        best_scores, best_rows = scores.gather(1, order), rows.gather(1, order)
    return best_scores.numpy(), best_rows.numpy()


def search(model: ConnectedModel, index_dir: str | Path, query: Any, query_modality: str, k: int = 5,
           chunk: int = 65_536, *, space: str | None = None) -> pd.DataFrame:
    """The ``k`` index items most similar to a query: rank, score, id, item and every other column of the index's
    items (its manifest's). The query is a file or a text — or, with ``space``, that space's precomputed
    embedding(s) of ``query_modality`` (a d-vector or Q×d rows; projected by the model; results then start with a
    ``query`` column, the query's row)."""
    embeddings, items, _ = open_index(index_dir, model)
    if space is None:
        vectors = model.embed(query_modality, [query])
    else:
        vectors = model.project(space, query_modality, np.atleast_2d(np.asarray(query, dtype=np.float32)))
    scores, rows = top_k(vectors, embeddings, k, chunk)
    frames = []
    for q in range(len(vectors)):
        hits = items.iloc[rows[q]].reset_index(drop=True)
        front = pd.DataFrame({"rank": np.arange(1, len(hits) + 1), "score": scores[q].astype(float)})
        if space is not None and len(vectors) > 1:
            front.insert(0, "query", q)
        frames.append(pd.concat([front, hits.assign(id=hits["id"].astype(str), item=hits["item"].astype(str))], axis=1))
    return pd.concat(frames, ignore_index=True)


def write_results(results: pd.DataFrame, path: str | Path) -> Path:
    """Search results as ``.json`` (records) or ``.parquet``, atomically."""
    path = Path(path)
    if path.suffix == ".parquet":
        return write_parquet(path, results)
    if path.suffix == ".json":
        with atomic_path(path, ".json") as tmp:
            tmp.write_text(results.to_json(orient="records", indent=1) + "\n")
        return path
    raise ValueError(f"{path}: write results as .json or .parquet")
