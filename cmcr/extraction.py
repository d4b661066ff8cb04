"""Sharded, resumable, multi-process embedding extraction at paper scale (millions of items).

Items are cut into fixed shards of ``shard_size`` consecutive items. Shard k belongs to rank
``k % world_size`` (ranks from ``torchrun``'s ``RANK`` / ``WORLD_SIZE``, or given), so any number of
GPUs or nodes share the work without talking to each other. A finished shard is two files written
atomically — ``shard-00007.npy`` (embeddings of the items that loaded) and ``shard-00007.parquet``
(one row per item: id, position, ok, reason) — and is skipped on rerun, so a killed run resumes where
it stopped. Shards live in ``<name>.shards/<run key>/``: the key is a digest of everything that decides
them (the space's :meth:`~cmcr.encoders.base.EncoderSpace.identity` — weights, settings, cmcr version —, the
modality, the items and ids, ``shard_size`` and ``batch_size``; ``run.json`` beside the shards says
what), so a run with other weights, other items or another shard size never picks up stale shards; it
starts its own folder, and folders of other runs are reported so they can be deleted. Shards are
deterministic (fixed items, fixed batches), hence a resumed run produces byte-identical outputs to an
uninterrupted one. Shards are content-aware: a shard's table records each file's size and modification
time (``size``, ``mtime_ns``) as they were before it was read, and a finished shard is reused only while
every one of its files still has them — a file replaced in place, or a file that failed and was fixed,
re-embeds its shard (and only it). The cost is one ``stat`` per file per run (seconds for millions of
files on a local disk; more on a network file system). :func:`merge_shards` assembles the final
``<name>.npy`` / ``<name>.parquet`` / ``<name>.failures.parquet`` once every shard exists, and
``<name>.run`` naming the run they come from; :func:`shard_runs` lists the runs kept (``cmcr shards``).

Decoding runs in DataLoader workers (``num_workers``); encoding in the main process on the space's
device. Any exception while loading one item (unreadable image, a box outside its image, empty audio,
NaN cloud, a bug in a loader…) is a per-item failure: recorded with its reason, counted in the summary,
and the run fails only if the failure rate exceeds ``max_failure_rate``. An error of the encoder itself
(bad weights, out of memory) stops the run with :class:`EncoderError`, naming the set and the items.
:func:`extract` is the same loading and encoding for a small in-memory list (tests, the CLI, the demo
spaces' statistics), without shards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from cmcr.artifacts import ArtifactError, atomic_path, npy_writer, save_npy, write_json, write_parquet
from cmcr.config import ConfigError
from cmcr.encoders.base import EncoderSpace, build_space
from cmcr.items import as_item

log = logging.getLogger(__name__)


class EncoderError(RuntimeError):
    """The encoder itself failed on a batch (bad weights, out of memory…): the run stops."""


def load_item(space: EncoderSpace, modality: str, item: Any) -> tuple[torch.Tensor | None, str]:
    """``space.load`` of one item: ``(tensor, "")``, or ``(None, reason)`` for any exception but running out
    of memory — a per-item failure is recorded by the caller, never a crashed stage."""
    try:
        return space.load(modality, item), ""
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 — any loader error of one item is that item's failure
        return None, f"{type(exc).__name__}: {exc}"


def encode_batch(space: EncoderSpace, modality: str, batch: list[torch.Tensor], where: str) -> np.ndarray:
    """``space.encode`` of loaded items as float32 numpy; its errors stop the run as :class:`EncoderError`."""
    try:
        return space.encode(modality, batch).cpu().numpy().astype(np.float32, copy=False)
    except Exception as exc:
        raise EncoderError(f"{space.name} {modality} encoder failed on {where} ({len(batch)} items): "
                           f"{type(exc).__name__}: {exc}") from exc


@dataclass
class Extraction:
    """Embeddings of the items that loaded, their positions in the input, and the failures."""

    embeddings: np.ndarray
    kept: list[int]
    failures: list[dict[str, str]] = field(default_factory=list)


class FailureRateError(ArtifactError):
    """More items of a set failed to load than ``max_failure_rate`` allows: a bad input, not a bug, so the CLI
    and the stages print it as one line (the failures file and the option that keeps going)."""


def check_failure_rate(label: str, failed: int, total: int, limit: float, detail: str,
                       option: str = "max_failure_rate") -> None:
    """Fail a set whose share of failed items exceeds ``limit`` (``detail`` says where to look; ``option`` is
    what the caller sets to accept more failures: ``--max-failure-rate`` on the command line,
    ``extraction.max_failure_rate`` in params.yaml)."""
    rate = failed / total if total else 0.0
    if rate > limit:
        enough = math.ceil(rate * 1000) / 1000  # the smallest 0.1 % step that lets this set through
        raise FailureRateError(f"{label}: {failed} of {total} items failed ({rate:.1%} > {limit:.1%}); {detail}; "
                               f"to keep going without them, raise {option} (e.g. to {enough:g})")


def extract(space: EncoderSpace, modality: str, items: Sequence[Any], *, ids: Sequence[str] | None = None,
            batch_size: int = 256, progress: bool = True, desc: str | None = None) -> Extraction:
    """Embed ``items`` with ``space``'s ``modality`` encoder; a bad item is recorded, never silently dropped."""
    ids = list(ids) if ids is not None else [str(i) for i in range(len(items))]
    out = np.empty((len(items), space.dim), dtype=np.float32)
    kept: list[int] = []
    failures: list[dict[str, str]] = []
    bar = tqdm(total=len(items), desc=desc or f"{space.name} {modality}", unit="item", disable=not progress)
    for start in range(0, len(items), batch_size):
        batch, positions = [], []
        for i in range(start, min(start + batch_size, len(items))):
            loaded, reason = load_item(space, modality, items[i])
            if loaded is None:
                failures.append({"id": ids[i], "item": str(items[i]), "reason": reason})
            else:
                batch.append(loaded)
                positions.append(i)
        if batch:
            emb = encode_batch(space, modality, batch, f"items {positions[0]}–{positions[-1]}")
            out[len(kept):len(kept) + len(batch)] = emb
            kept.extend(positions)
        bar.update(min(batch_size, len(items) - start))
    bar.close()
    if failures:
        log.warning("%s %s: %d of %d items failed (first: %s)", space.name, modality, len(failures), len(items),
                    failures[0]["reason"])
    return Extraction(out[:len(kept)], kept, failures)


@dataclass
class ExtractionSummary:
    name: str
    items: int
    embedded: int
    failed: int
    shards_done: int
    shards_skipped: int
    merged: bool
    shards_changed: int = 0  # of shards_done: finished before, but a file changed since


class _Items(Dataset):
    """Decodes items with ``space.load``; a failure becomes a (position, None, reason) record."""

    def __init__(self, space: EncoderSpace, modality: str, items: Sequence[Any], start: int) -> None:
        self.space, self.modality, self.items, self.start = space, modality, items, start

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.start + i, *load_item(self.space, self.modality, self.items[i])


def _collate(batch):
    return batch


def rank_and_world(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """This process's rank and the world size (``torchrun`` sets RANK / WORLD_SIZE)."""
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world size {world_size}")
    return rank, world_size


def shard_paths(out_dir: Path, k: int) -> tuple[Path, Path]:
    return out_dir / f"shard-{k:05d}.npy", out_dir / f"shard-{k:05d}.parquet"


def file_states(items: Sequence[Any], modality: str) -> list[tuple[int, int]]:
    """``(size, mtime_ns)`` of each item's file (``(-1, -1)`` for texts and for files that cannot be stat'ed)."""
    if modality == "text":
        return [(-1, -1)] * len(items)
    out = []
    for item in items:
        try:
            st = os.stat(as_item(item).path)
            out.append((int(st.st_size), int(st.st_mtime_ns)))
        except (OSError, TypeError, ValueError):
            out.append((-1, -1))
    return out


def shard_is_current(table_path: Path, states: list[tuple[int, int]]) -> bool:
    """Whether a finished shard's recorded file states are the files' states now (older shards without
    them are not)."""
    try:
        table = pd.read_parquet(table_path, columns=["size", "mtime_ns"])
    except (KeyError, ValueError, OSError):
        return False
    return list(zip(table["size"].tolist(), table["mtime_ns"].tolist())) == states


def shard_count(items: int, shard_size: int) -> int:
    """How many shards ``items`` items make (at least one, so an empty set still gets its files)."""
    return max(1, -(-items // shard_size))


def run_key(space: EncoderSpace, modality: str, items: Sequence[Any], ids: Sequence[str], shard_size: int,
            batch_size: int) -> tuple[str, dict[str, Any]]:
    """The key of an extraction run (16 hex digits) and the description it digests (saved as run.json)."""
    listing = hashlib.blake2b(digest_size=16)
    for item, item_id in zip(items, ids):
        listing.update(f"{item_id}\x1f{item}\x1e".encode())
    description = {"space": space.identity(), "modality": modality, "items": len(items),
                   "items_digest": listing.hexdigest(), "shard_size": shard_size, "batch_size": batch_size}
    key = hashlib.blake2b(json.dumps(description, sort_keys=True).encode(), digest_size=8).hexdigest()
    return key, description


def extract_sharded(space: EncoderSpace, modality: str, items: Sequence[Any], ids: Sequence[str], out_dir: str | Path,
                    name: str, *, shard_size: int = 50_000, batch_size: int = 256, num_workers: int = 0,
                    rank: int | None = None, world_size: int | None = None, max_failure_rate: float = 0.01,
                    progress: bool = True, merge: bool = True, compute: bool = True,
                    rate_option: str = "max_failure_rate") -> ExtractionSummary:
    """Embed ``items`` shard by shard into ``out_dir/<name>.shards/``, then merge if all shards exist.
    ``compute=False`` only merges (the shards were embedded by this call's ranks already). Too many failures
    raise :class:`FailureRateError`, whose message names ``rate_option`` (what the caller's user sets to accept
    more)."""
    if len(items) != len(ids):
        raise ArtifactError(f"{name}: {len(items)} items but {len(ids)} ids")
    if len(set(ids)) != len(ids):
        raise ArtifactError(f"{name}: item ids are not unique")
    rank, world_size = rank_and_world(rank, world_size)
    out_dir = Path(out_dir)
    key, description = run_key(space, modality, items, ids, shard_size, batch_size)
    shard_dir = out_dir / f"{name}.shards" / key
    shard_dir.mkdir(parents=True, exist_ok=True)
    if not (shard_dir / "run.json").exists():
        write_json(shard_dir / "run.json", description)
    others = sorted(p.name for p in shard_dir.parent.iterdir() if p.is_dir() and p.name != key)
    if others:
        log.warning("%s: shards of %d other run(s) (other weights, settings or items) in %s: %s — not used; "
                    "delete them to free the disk", name, len(others), shard_dir.parent, ", ".join(others))
    n_shards = shard_count(len(items), shard_size)
    mine = [k for k in range(n_shards) if k % world_size == rank] if compute else []
    done = skipped = changed = 0
    bar = tqdm(total=sum(min(shard_size, len(items) - k * shard_size) for k in mine), desc=f"{name} (rank {rank})",
               unit="item", unit_scale=True, disable=not progress)
    for k in mine:
        npy_path, table_path = shard_paths(shard_dir, k)
        start, stop = k * shard_size, min((k + 1) * shard_size, len(items))
        states = file_states(items[start:stop], modality)  # before reading: a later change re-embeds next time
        if npy_path.exists() and table_path.exists():  # the table is written last: both present = complete
            if shard_is_current(table_path, states):
                skipped += 1
                bar.update(stop - start)
                continue
            changed += 1
            log.info("%s: shard %d has files changed since it was embedded; embedding it again", name, k)
        embeddings, rows = [], []
        loader = DataLoader(_Items(space, modality, items[start:stop], start), batch_size=batch_size,
                            num_workers=num_workers, collate_fn=_collate,
                            multiprocessing_context="fork" if num_workers > 0 else None)
        for batch in loader:
            good = [(i, x) for i, x, _ in batch if x is not None]
            if good:
                embeddings.append(encode_batch(space, modality, [x for _, x in good],
                                               f"{name} items {good[0][0]}–{good[-1][0]}"))
            for i, x, reason in batch:
                size, mtime = states[i - start]
                rows.append({"id": str(ids[i]), "position": i, "ok": x is not None, "reason": reason,
                             "size": size, "mtime_ns": mtime})
            bar.update(len(batch))
        matrix = np.concatenate(embeddings) if embeddings else np.zeros((0, space.dim), np.float32)
        save_npy(npy_path, matrix.astype(np.float32))
        write_parquet(table_path, pd.DataFrame(rows, columns=["id", "position", "ok", "reason", "size", "mtime_ns"]))
        done += 1
    bar.close()
    merged = merge and all(all(p.exists() for p in shard_paths(shard_dir, k)) for k in range(n_shards))
    embedded = failed = 0
    if merged:
        table = _shard_table(shard_dir, n_shards)
        failures = table[~table["ok"]].reset_index(drop=True)[["id", "position", "reason"]]
        if len(items) and len(failures) / len(items) > max_failure_rate:
            # too many failures: write what failed, and no merged embeddings a later step could trust
            for stale in (f"{name}.npy", f"{name}.parquet", f"{name}.run"):
                (out_dir / stale).unlink(missing_ok=True)
            write_parquet(out_dir / f"{name}.failures.parquet", failures)
            check_failure_rate(name, len(failures), len(items), max_failure_rate,
                               f"see {out_dir / (name + '.failures.parquet')}; nothing merged", rate_option)
        embedded, failed = merge_shards(shard_dir, n_shards, out_dir, name, space.dim, table)
    summary = ExtractionSummary(name, len(items), embedded, failed, done, skipped, merged, changed)
    log.info("%s: %d items, %d embedded, %d failed; shards: %d computed (%d for changed files), %d already done%s",
             name, len(items), embedded, failed, done, changed, skipped,
             "" if merged else " (waiting for other ranks before merging)")
    return summary


def _shard_table(shard_dir: Path, n_shards: int) -> pd.DataFrame:
    """A run's shard tables, concatenated (one row per item: id, position, ok, reason, …)."""
    return pd.concat([pd.read_parquet(shard_paths(shard_dir, k)[1]) for k in range(n_shards)], ignore_index=True)


def merge_shards(shard_dir: Path, n_shards: int, out_dir: Path, name: str, dim: int,
                 table: pd.DataFrame) -> tuple[int, int]:
    """Concatenate shards into ``<name>.npy`` + ``<name>.parquet`` (kept items) + ``<name>.failures.parquet``;
    ``table`` is the run's shard tables (:func:`_shard_table`)."""
    kept = table[table["ok"]].reset_index(drop=True)
    failures = table[~table["ok"]].reset_index(drop=True)
    with npy_writer(out_dir / f"{name}.npy", (len(kept), dim)) as dest:
        row = 0
        for k in range(n_shards):
            part = np.load(shard_paths(shard_dir, k)[0], mmap_mode="r")
            dest[row:row + len(part)] = part
            row += len(part)
        if row != len(kept):
            raise ArtifactError(f"{shard_dir}: shards hold {row} embeddings but their tables list {len(kept)}")
    write_parquet(out_dir / f"{name}.parquet", kept[["id", "position"]])
    write_parquet(out_dir / f"{name}.failures.parquet", failures[["id", "position", "reason"]])
    with atomic_path(out_dir / f"{name}.run", ".run") as tmp:  # which run the merged files come from
        tmp.write_text(shard_dir.name + "\n")
    return len(kept), len(failures)


def shard_runs(out_dir: str | Path) -> pd.DataFrame:
    """The extraction runs kept under ``out_dir`` (one row per ``<name>.shards/<run key>/``): set name, key,
    space, weights digest, items, shards finished / expected, and whether the merged output is this run's."""
    rows = []
    for folder in sorted(Path(out_dir).glob("*.shards/*")):
        if not (folder / "run.json").is_file():
            continue
        run = json.loads((folder / "run.json").read_text())
        name = folder.parent.name[: -len(".shards")]
        expected = shard_count(run["items"], run["shard_size"])
        finished = sum(all(p.exists() for p in shard_paths(folder, k)) for k in range(expected))
        rows.append({"name": name, "key": folder.name, "space": run["space"]["name"], "modality": run["modality"],
                     "weights": run["space"]["weights"][:12], "items": run["items"], "shard_size": run["shard_size"],
                     "shards_done": finished, "shards": expected,
                     "merged_here": _merged_key(Path(out_dir), name) == folder.name})
    columns = ["name", "key", "space", "modality", "weights", "items", "shard_size", "shards_done", "shards",
               "merged_here"]
    return pd.DataFrame(rows, columns=columns)


def _merged_key(out_dir: Path, name: str) -> str | None:
    marker = out_dir / f"{name}.run"
    return marker.read_text().strip() if marker.is_file() else None


@dataclass(frozen=True)
class ExtractionJob:
    """One set to embed: its output name, the items' modality, the items and their unique ids."""

    name: str
    modality: str
    items: list[Any]
    ids: list[str]


def resolve_devices(spec: Any, key: str = "paper.extraction.devices") -> list[str | None]:
    """The extraction workers ``spec`` asks for, one device each: ``auto`` — every visible GPU (one worker on
    the encoder's own device when there is none or one); ``N`` — the first N GPUs, or N processes on the CPU
    when there is no GPU; ``[ids]`` — those GPUs. ``None`` stands for "the encoder's own ``device`` setting"
    (one in-process worker). ConfigError naming ``key`` for anything else."""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if spec == "auto":
        return [f"cuda:{i}" for i in range(gpus)] if gpus > 1 else [None]
    if isinstance(spec, int) and not isinstance(spec, bool):
        if spec < 1:
            raise ConfigError(f"{key} must be auto, a number of workers >= 1 or a list of GPU ids, got {spec!r}")
        if not gpus:
            return ["cpu"] * spec if spec > 1 else [None]
        if spec > gpus:
            raise ConfigError(f"{key} = {spec} but only {gpus} GPU(s) are visible")
        return [f"cuda:{i}" for i in range(spec)] if spec > 1 else [None]
    if (isinstance(spec, list) and spec and len(set(spec)) == len(spec)
            and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in spec)):
        missing = [i for i in spec if i >= gpus]
        if missing:
            raise ConfigError(f"{key} lists GPU(s) {missing}, but {gpus} GPU(s) are visible")
        return [f"cuda:{i}" for i in spec]
    raise ConfigError(f"{key} must be auto, a number of workers >= 1 or a list of distinct GPU ids, got {spec!r}")


def _build(space: str, kwargs: dict[str, Any], device: str | None) -> EncoderSpace:
    """The encoder of one worker: on its GPU (``device`` overrides the setting), else as configured (CPU
    workers, like ``None``, leave the encoder's own ``device`` setting alone)."""
    on_gpu = device is not None and device.startswith("cuda")
    return build_space(space, **(kwargs | ({"device": device} if on_gpu else {})))


def _run_jobs(encoder: EncoderSpace, jobs: Sequence[ExtractionJob], out_dir: Path, rank: int, world_size: int,
              options: dict[str, Any], merge: bool, compute: bool = True) -> dict[str, ExtractionSummary]:
    return {job.name: extract_sharded(encoder, job.modality, job.items, job.ids, out_dir, job.name, rank=rank,
                                      world_size=world_size, merge=merge, compute=compute, **options) for job in jobs}


def _extraction_worker(index: int, space: str, kwargs: dict[str, Any], devices: list[str | None],
                       jobs: list[ExtractionJob], out_dir: str, options: dict[str, Any], threads: int) -> None:
    """A spawned worker (rank ``index + 1``): its shards of every job, no merging (the first rank merges).
    It computes with the parent's CPU thread count: CPU results depend on it (summation order)."""
    rank = index + 1
    torch.set_num_threads(threads)
    encoder = _build(space, kwargs, devices[rank])
    _run_jobs(encoder, jobs, Path(out_dir), rank, len(devices), options, merge=False)


def extract_on_devices(space: str, kwargs: dict[str, Any], jobs: Sequence[ExtractionJob], out_dir: str | Path,
                       devices: list[str | None], **options: Any) -> dict[str, ExtractionSummary]:
    """Every job through :func:`extract_sharded`, split across one worker per entry of ``devices``
    (:func:`resolve_devices`): rank 0 works in this process, ranks 1… are processes started with PyTorch's
    launcher (``torch.multiprocessing.start_processes``, spawn), each building the encoder ``space`` with
    ``kwargs`` on its own device and taking shards k ≡ rank (mod workers) of every job — shards need no
    collective. Once all have finished, this process merges each job once, so the outputs are the bytes a
    single process writes (the run key never depends on the rank or the device; CPU workers compute with this
    process's thread count, as CPU results depend on it — set ``CMCR_NUM_THREADS`` to share the cores). A
    failed worker stops the run with :class:`EncoderError` naming its rank, device and error. ``options`` are
    :func:`extract_sharded`'s (``shard_size``, ``batch_size``, ``num_workers``, ``max_failure_rate``…)."""
    out_dir = Path(out_dir)
    if len(devices) == 1:
        return _run_jobs(_build(space, kwargs, devices[0]), jobs, out_dir, 0, 1, options, merge=True)
    import torch.multiprocessing as mp

    log.info("%s: %d extraction workers on %s", space, len(devices), ", ".join(str(d or "default") for d in devices))
    context = mp.start_processes(_extraction_worker, nprocs=len(devices) - 1, join=False, start_method="spawn",
                                 args=(space, kwargs, devices, list(jobs), str(out_dir), options,
                                       torch.get_num_threads()))
    try:
        encoder = _build(space, kwargs, devices[0])
        _run_jobs(encoder, jobs, out_dir, 0, len(devices), options, merge=False)
        try:
            while not context.join():
                pass
        except mp.ProcessRaisedException as exc:
            rank = exc.error_index + 1
            last = [line for line in str(exc).strip().splitlines() if line.strip()][-1]
            raise EncoderError(f"{space}: extraction worker {rank} ({devices[rank]}) failed: {last}") from exc
        except mp.ProcessExitedException as exc:
            rank = exc.error_index + 1
            raise EncoderError(f"{space}: extraction worker {rank} ({devices[rank]}) died "
                               f"(exit code {exc.exit_code})") from exc
    finally:
        for process in context.processes:
            if process.is_alive():
                process.terminate()
    return _run_jobs(encoder, jobs, out_dir, 0, len(devices), options, merge=True, compute=False)  # merge only
