"""Training (section 3.5): the data of a connection, the optimisation loop every trainer shares, seeds side by side.
The encoders are frozen and never seen here; the trainers of a unit (a connection, a graph, the paired-data reference)
are in :mod:`cmcr.graph`.

The whole training set — per space the shared-modality embeddings (t^I, t^A) and the Eq. 2 aggregates
(v^I, a^A) — is moved to the device once as four tensors and shuffled by index each epoch; a batch is
an index slice, so there is no per-sample DataLoader. Each step applies Eq. 3 (fresh noise), Eq. 4
(projection), Eq. 10 (loss) and one AdamW step; the learning rate follows a per-step cosine decay.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from cmcr.artifacts import ArtifactError, load_embedding_set, load_npy, read_parquet
from cmcr.checks import EmbeddingError, as_tensor, check_matrix, check_same_rows
from cmcr.config import ConnectionConfig, TrainConfig
from cmcr.device import deterministic_cuda, resolve_device
from cmcr.optim import AdamW
from cmcr.pairing import align_by_id, pair_rows
from cmcr.projector import build_projectors, count_parameters

log = logging.getLogger(__name__)

#: projector initialisation draws from PyTorch's global RNG: one training at a time (:func:`train_seeds`)
_INIT_LOCK = threading.Lock()


@dataclass
class ConnectionData:
    """Training embeddings of one connection, row i of every matrix coming from the same shared item.

    ``shared[space]``: the shared modality (e.g. text) embedded in that space (``clip_text``, ``clap_text``);
    ``memory[space]``: its Eq. 2 aggregate over that space's memory (``clip_image``, ``clap_audio``).
    """

    shared: Mapping[str, torch.Tensor | np.ndarray]
    memory: Mapping[str, torch.Tensor | np.ndarray]

    @staticmethod
    def file_names(config: ConnectionConfig) -> dict[str, dict[str, str]]:
        """Files a training folder holds, e.g. for CLIP–CLAP ``clip_text.npy``, ``clap_text.npy``,
        ``clip_image_from_text.npy``, ``clap_audio_from_text.npy`` (the Eq. 2 aggregates)."""
        conn = config.connection
        shared = conn.shared_modality
        return {
            "shared": {s: f"{conn.embedding_name(s, shared)}.npy" for s in conn.spaces},
            "memory": {s: f"{conn.aggregate_name(s)}.npy" for s in conn.spaces},
        }

    @classmethod
    def from_folder(cls, folder: str | Path, config: ConnectionConfig) -> "ConnectionData":
        """Memory-map the four training matrices of ``config.connection`` from ``folder``."""
        names = cls.file_names(config)
        dims = config.projector.in_dims
        folder = Path(folder)
        return cls(
            shared={s: load_npy(folder / f, dim=dims.get(s)) for s, f in names["shared"].items()},
            memory={s: load_npy(folder / f, dim=dims.get(s)) for s, f in names["memory"].items()},
        )

    @classmethod
    def from_pipeline(cls, embeddings: str | Path, aggregated: str | Path, config: ConnectionConfig,
                      exclude_sources: tuple[str, ...] = ()) -> "ConnectionData":
        """The training data as the pipeline lays it out: ``<embeddings>/<space>/<shared>.npy`` + ``.parquet``
        (e.g. ``data/embeddings/clip/text.npy``) and ``<aggregated>/<aggregate>.npy`` (e.g.
        ``data/aggregated/clip_clap/softmax/clip_image_from_text.npy``, row i = Eq. 2 of shared row i).

        The two spaces' shared items are paired by id (``text_id`` / ``item_id`` / ``path``,
        :func:`cmcr.pairing.align_by_id`), never by row: texts listed in another order, or an item one
        space failed to load, still pair correctly; tables without a common id column are an
        ArtifactError. ``exclude_sources`` drops texts of those sources (appendix A; needs ``source``).
        """
        embeddings, aggregated = Path(embeddings), Path(aggregated)
        inputs = config.connection.training_inputs()  # per space: (shared-modality set, Eq. 2 aggregate)
        shared = {s: load_npy(embeddings / f"{src}.npy") for s, (src, _) in inputs.items()}
        memory = {s: load_npy(aggregated / f"{agg}.npy") for s, (_, agg) in inputs.items()}
        for s in inputs:
            check_same_rows(shared[s], str(embeddings / f"{inputs[s][0]}.npy"), memory[s],
                            str(aggregated / f"{inputs[s][1]}.npy"))
        tables = {s: read_parquet(embeddings / f"{src}.parquet", rows=shared[s].shape[0]) for s, (src, _) in inputs.items()}
        first, second = config.connection.spaces
        try:
            rows, key = align_by_id(tables, config.connection.shared_modality,
                                    f"{embeddings / inputs[first][0]} and {embeddings / inputs[second][0]}")
        except ValueError as exc:
            raise ArtifactError(str(exc)) from None
        gather = rows is not None  # rows dropped or reordered: one gather per matrix, whatever the reasons
        if gather:
            log.warning("%s: %d items in both spaces (%s), %s: %d, %s: %d — pairs joined by %s", config.connection.name,
                        len(rows[first]), config.connection.shared_modality, first, len(tables[first]), second,
                        len(tables[second]), key)
        else:
            rows = {s: np.arange(len(tables[s])) for s in tables}
        if exclude_sources:
            if "source" not in tables[first]:
                raise ArtifactError(f"{embeddings / inputs[first][0]}.parquet has no 'source' column: "
                                    "exclude_sources needs it")
            keep = np.flatnonzero(~tables[first]["source"].iloc[rows[first]].isin(list(exclude_sources)).to_numpy())
            log.info("excluding %s: %d of %d texts kept", list(exclude_sources), len(keep), len(rows[first]))
            rows = {s: np.asarray(r)[keep] for s, r in rows.items()}
            gather = True
        if gather:  # Eq. 2 row i belongs to shared row i: the same rows of both
            shared = {s: np.asarray(x[rows[s]]) for s, x in shared.items()}
            memory = {s: np.asarray(x[rows[s]]) for s, x in memory.items()}
        return cls(shared=shared, memory=memory)

    def resolve_dims(self, config: ConnectionConfig) -> ConnectionConfig:
        """``config`` with ``projector.in_dims`` read from the data: each space's width is its shared
        matrix's; a width the params state must agree (``EmbeddingError`` naming both), one they leave
        out is filled in — so spaces of any widths (e.g. 64 and 48) train without editing params."""
        dims = dict(config.projector.in_dims)
        for space in config.connection.spaces:
            if space not in self.shared:
                continue  # validate() names the missing space
            width = int(as_tensor(self.shared[space][:1]).shape[1]) if len(self.shared[space]) else None
            if width is None:
                continue
            if space in dims and dims[space] != width:
                raise EmbeddingError(f"projector.in_dims.{space} is {dims[space]} but the {space} embeddings have "
                                     f"{width} columns; remove it from params (widths are read from the files) or fix it")
            dims[space] = width
        return dataclasses.replace(config, projector=dataclasses.replace(config.projector, in_dims=dims))

    def validate(self, config: ConnectionConfig) -> int:
        """Check names, shapes, finiteness and widths against the projector config; return N."""
        conn = config.connection
        n = None
        for role, mats in (("shared", self.shared), ("memory", self.memory)):
            if set(mats) != set(conn.spaces):
                raise EmbeddingError(f"{role} embeddings must be given for spaces {list(conn.spaces)}, got {sorted(mats)}")
            for space, mat in mats.items():
                modality = conn.shared_modality if role == "shared" else conn.memory_modality[space]
                name = conn.embedding_name(space, modality) + ("" if role == "shared" else " (Eq. 2 aggregate)")
                check_matrix(mat, name, dim=config.projector.in_dims[space])
                if n is None:
                    n, first = mat.shape[0], (mat, name)
                else:
                    check_same_rows(first[0], first[1], mat, name)
        assert n is not None
        return n


class Fitted(NamedTuple):
    """What the optimisation loop (:func:`fit_streams`) ends with: the projectors (on the CPU, in eval mode), the config
    as it ran (training scale ``auto`` applied) and the per-epoch history. The trainers of :mod:`cmcr.graph` turn it
    into the one result type of a trained unit, :class:`cmcr.graph.GraphResult`."""

    projectors: nn.ModuleDict
    config: ConnectionConfig
    history: list[dict[str, float]]


def cosine_lr(step: int, total_steps: int, lr: float, min_lr: float) -> float:
    """Cosine decay from ``lr`` at step 0 to ``min_lr`` after the last step."""
    if total_steps <= 1:
        return lr
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * step / total_steps))


def batch_slices(n: int, batch_size: int) -> list[slice]:
    """Batch boundaries of one epoch; a trailing batch of one item is dropped (BatchNorm needs ≥ 2)."""
    slices = [slice(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if slices and slices[-1].stop - slices[-1].start < 2:
        slices.pop()
    return slices


#: a unit that trains fewer optimiser steps than this gets a warning from the validate stage ("a few hundred":
#: the paired reference of issue 30 learned far less in 40 steps than in 320)
FEW_STEPS = 300


def planned_steps(train: TrainConfig, n: int) -> tuple[TrainConfig, int]:
    """What a training of ``n`` items runs: its train config after :func:`auto_scale` and its optimiser steps
    (epochs × :func:`batch_slices`' batches per epoch)."""
    ran = auto_scale(train, n)
    return ran, ran.epochs * len(batch_slices(n, ran.batch_size))


def auto_scale(train: TrainConfig, n: int) -> TrainConfig:
    """The training scale ``auto`` (params ``scale.mode: auto``; README "Training scale") for a training set of
    ``n`` items: ``train`` with the epochs and batch size that give at least ``train.auto_steps`` optimiser steps.

    The batch is ``train.batch_size`` (the paper's), lowered to ⌊n · epochs / auto_steps⌋ when the configured
    epochs would otherwise run fewer steps, but never below ``auto_min_batch`` (nor above n); if even that batch
    gives fewer steps, the epochs grow to ⌈auto_steps / steps per epoch⌉. A paper-sized set keeps the paper's
    values (CLIP–CLAP: 2.33M texts at batch 10,240 run 8,208 steps in 36 epochs). Steps per epoch count as
    :func:`batch_slices` cuts them. ``train`` unchanged when ``auto_steps`` is 0 (scale ``paper`` / ``small``)."""
    if train.auto_steps <= 0:
        return train
    if n < 2:
        raise EmbeddingError(f"training set has {n} item(s); at least 2 are needed (BatchNorm)")
    floor = min(train.auto_min_batch, n)
    batch = max(floor, min(train.batch_size, n * train.epochs // train.auto_steps, n))
    per_epoch = len(batch_slices(n, batch))
    epochs = max(train.epochs, math.ceil(train.auto_steps / per_epoch))
    return dataclasses.replace(train, epochs=epochs, batch_size=batch)


def load_true_pairs(embeddings: str | Path, dataset: str, files: Mapping[str, str]) -> dict[str, np.ndarray]:
    """The true pairs a paired-data reference trains on, from the pipeline's embeddings folder: ``files`` (``{space:
    file name}``, ``<set>@<dataset>``, as the unit's plan resolved them: :data:`cmcr.benchmarks.PAIRED_SETS` for a
    variant, a paired graph's own), rows joined by ``pair_id`` (an item that failed to load on either side drops its
    pair). ArtifactError naming a missing file or column."""
    loaded = {space: load_embedding_set(Path(embeddings) / space, file, columns=["pair_id"]) for space, file in files.items()}
    (first, (m1, t1)), (second, (m2, t2)) = loaded.items()
    try:
        rows1, rows2, coverage = pair_rows(t1, t2, "pair_id", f"{dataset} true pairs ({files[first]}, {files[second]})")
    except ValueError as exc:
        raise ArtifactError(str(exc)) from None
    if coverage["scored"] < coverage["listed"]:
        log.warning("%s true pairs: %d of %d ids on both sides", dataset, coverage["scored"], coverage["listed"])
    return {first: np.asarray(m1[rows1]), second: np.asarray(m2[rows2])}


def fit_streams(inputs: Mapping[str, torch.Tensor | np.ndarray], sizes: Mapping[str, int], config: ConnectionConfig,
                spaces: Sequence[str], step, *, progress: bool, label: str,
                build: Callable[[], nn.ModuleDict] | None = None) -> Fitted:
    """The optimisation loop every trainer shares: the inputs moved to the device once; one projector per space
    of ``spaces`` initialised from the seed; per epoch a seeded shuffle of each stream (``sizes``: stream →
    items, in order; a connection is one stream, a graph one per link); batches as index slices — an epoch
    has as many steps as the first stream has batches, a stream with fewer starts over —;
    ``step(projectors, tensors, {stream: idx}, generator)`` giving the loss parts; AdamW with the per-step
    cosine learning rate; a per-epoch history of mean losses. ``build()`` makes the projectors (default: one
    ``config.projector`` per space of ``spaces``; Ex-MCR's leaves bring their own, :mod:`cmcr.exmcr`)."""
    streams = list(sizes)
    tc = auto_scale(config.train, sizes[streams[0]])
    if tc is not config.train:
        log.info("%s: scale auto (at least %d steps, batch >= %d): %d items → %d epochs at batch %d (configured "
                 "%d × %d)", label, tc.auto_steps, tc.auto_min_batch, sizes[streams[0]], tc.epochs, tc.batch_size,
                 config.train.epochs, config.train.batch_size)
        config = dataclasses.replace(config, train=tc)
    device = resolve_device(tc.device)
    deterministic_cuda(device)  # GPU: the same bytes run to run (CPU: the stage pins, cmcr.reproducibility)
    slices = {k: batch_slices(n, tc.batch_size) for k, n in sizes.items()}
    for k, sl in slices.items():
        if not sl:
            raise EmbeddingError(f"training set{' ' + k if k else ''} has {sizes[k]} item(s); at least 2 are needed "
                                 "(BatchNorm)")
    steps_per_epoch = len(slices[streams[0]])

    with _INIT_LOCK, torch.random.fork_rng(devices=[]):  # projector initialisation from the seed, while no other
        torch.manual_seed(tc.seed)                          # training (another thread) draws from the global RNG
        projectors = build_projectors(config.projector, tuple(spaces)) if build is None else build()
    projectors = projectors.to(device)
    log.info("training %s: %s items, %d steps/epoch × %d epochs, %d trainable parameters, device %s, seed %d",
             label, "/".join(str(n) for n in sizes.values()), steps_per_epoch, tc.epochs,
             count_parameters(projectors), device, tc.seed)
    # frozen encoders: no graph back
    tensors = {k: as_tensor(x).detach().to(device=device, dtype=torch.float32) for k, x in inputs.items()}

    optimizer = AdamW(projectors.parameters(), weight_decay=tc.weight_decay)
    total_steps = tc.epochs * steps_per_epoch
    generator = torch.Generator(device=device).manual_seed(tc.seed)
    history: list[dict[str, float]] = []
    steps = 0
    projectors.train()
    bar = tqdm(total=total_steps, desc=f"train {label}", unit="step", disable=not progress)
    for epoch in range(tc.epochs):
        started = time.perf_counter()
        order = {k: torch.randperm(sizes[k], generator=generator, device=device) for k in streams}
        sums: dict[str, float] = {}
        for i in range(steps_per_epoch):
            lr = cosine_lr(steps, total_steps, tc.lr, tc.min_lr) if tc.lr_schedule == "cosine" else tc.lr
            idx = {k: order[k][slices[k][i % len(slices[k])]] for k in streams}
            parts = step(projectors, tensors, idx, generator)
            optimizer.zero_grad()
            parts["loss"].backward()
            optimizer.step(lr)
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach())
            steps += 1
            bar.update(1)
        # no wall-clock time in the history: it goes into the checkpoint, whose bytes must depend only on
        # the training (identical weights → identical file → no dvc.lock churn); the log has the timing
        record = {"epoch": epoch + 1, "lr": lr}
        record.update({k: v / steps_per_epoch for k, v in sums.items()})
        history.append(record)
        log.info("epoch %d/%d loss %.4f (%s) lr %.2e, %.2f s", epoch + 1, tc.epochs, record["loss"],
                 ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k not in ("epoch", "lr", "loss")), lr,
                 time.perf_counter() - started)
        bar.set_postfix(loss=f"{record['loss']:.4f}")
    bar.close()
    projectors.eval()
    return Fitted(projectors.cpu(), config, history)


def train_seeds(train_one: Callable[[int], Any], seeds: Sequence[int], workers: int | None = None,
                names: Sequence[str] | None = None) -> dict[int, Any]:
    """``train_one(seed)`` for every seed, ``workers`` at a time in threads of this process (default: one per
    CPU core PyTorch's pool leaves free, i.e. cores ÷ intra-op threads). With one intra-op thread (the stages'
    default) every operation of a training runs in its own calling thread, so a training computes exactly
    what it computes alone — the results do not depend on how many run side by side (tested) — while the
    seeds share the cores; the projectors' initialisation takes the global RNG under a lock. Results in the
    order of ``seeds``; the first failure is raised. ``names`` says what each job is in the log (default: the
    seeds; a caller whose jobs are not seeds, e.g. Ex-MCR's seed × leaf jobs, names them)."""
    seeds = list(seeds)
    if workers is None:
        workers = max(1, (os.cpu_count() or 1) // max(1, torch.get_num_threads()))
    workers = max(1, min(workers, len(seeds)))
    if workers == 1:
        return {seed: train_one(seed) for seed in seeds}
    log.info("training %s, %d at a time", ", ".join(names) if names is not None else f"seeds {seeds}", workers)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="seed") as pool:
        futures = {seed: pool.submit(train_one, seed) for seed in seeds}
        return {seed: futures[seed].result() for seed in seeds}
