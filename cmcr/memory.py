"""Eq. 2 — inter-modality semantic consistency: text-guided aggregation of a unimodal memory.

For a query ``t_i`` (say a CLIP text embedding) and a memory ``V = {v_1..v_M}`` (CLIP image embeddings
of unpaired images), Eq. 2 produces

    v_i = Σ_k softmax_k(sim(t_i, v_k) / τ1) · v_k,

i.e. single-head attention with queries ``t``, keys and values ``V`` and scale ``1/τ1``. The paper uses
N = 2.33M texts and M = 1.3M images (1.8M audio clips): the N×M similarity matrix (~12 TB in fp32) can
never be formed. :func:`aggregate_memory` therefore streams over memory chunks with an online
log-sum-exp softmax, so peak memory is ``query_chunk × memory_chunk`` logits plus a
``query_chunk × d`` accumulator, whatever N and M are. The result is exact (equal to the materialised
formula up to fp32 rounding).

``memory.kernel`` chooses how the softmax is computed: ``sdpa`` hands each query chunk with the whole
memory as keys and values to ``torch.nn.functional.scaled_dot_product_attention`` (single head, scale
1/τ1), whose fused CPU kernel streams over keys with a per-block running max — exact like ours, faster
on the CPU, and without our lazy shift's recomputations on clustered or class-ordered memories;
``streamed`` is the chunked online softmax below (GPU memories staged in chunks, reduced precision).
``auto`` (default): ``sdpa`` for fp32 on the CPU, ``streamed`` otherwise.

Table 5 ablations: ``mode="argmax"`` (row I) takes the single most similar memory item, and
``mode="random"`` (row J) a uniformly random memory item (seeded).
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from cmcr.checks import EmbeddingError, as_tensor, check_matrix, check_unit_norm
from cmcr.config import MemoryConfig
from cmcr.device import deterministic_cuda, flush_denormals, resolve_device

log = logging.getLogger(__name__)

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def aggregate_memory(
    queries: torch.Tensor | np.ndarray,
    memory: torch.Tensor | np.ndarray,
    config: MemoryConfig = MemoryConfig(),
    *,
    device: str | torch.device | None = "auto",
    out: np.ndarray | torch.Tensor | None = None,
    check_inputs: bool = True,
    progress: bool = False,
    desc: str = "Eq. 2 aggregation",
    values: torch.Tensor | np.ndarray | None = None,
) -> torch.Tensor | np.ndarray:
    """Eq. 2: semantically consistent embeddings ``v_i = Σ_k softmax_k(sim(t_i, v_k)/τ1) v_k``.

    Args:
        queries: N×d query embeddings (texts in the paper), L2-normalised. Tensor or (memory-mapped) array.
        memory: M×d memory embeddings (images / audio / 3D / texts), L2-normalised. Tensor or memmap.
        config: mode (``softmax`` | ``argmax`` | ``random``), τ1, chunk sizes, precision, seed.
        device: where to compute (``auto``: CUDA if available).
        out: optional preallocated N×d float32 destination (e.g. an ``np.lib.format.open_memmap``), so
            that paper-scale outputs never need to fit in RAM.
        check_inputs: validate shapes, finiteness and unit norms before any compute.
        progress: show a progress bar over query chunks (rates in queries/s).
        values: M×e embeddings of the same memory items in *another* space (default: ``memory`` itself).
            The weights come from ``memory`` (the keys), the sum is over ``values``: Ex-MCR's transfer
            of a query's neighbourhood across two spaces through the items both embed
            (:func:`cmcr.exmcr.modality_centric_data`, e.g. CLAP texts as keys, the same texts in CLIP as
            values). Eq. 2 itself is ``values=None``.

    Returns:
        N×e float32 embeddings on the CPU (``out`` itself when given; e = d without ``values``). Rows are
        convex combinations of memory items, hence *not* unit-norm; Eq. 3 re-normalises them.
    """
    if check_inputs:
        check_matrix(queries, "queries")
        check_matrix(memory, "memory", dim=queries.shape[1])
        check_unit_norm(queries, "queries")
        check_unit_norm(memory, "memory")
        if values is not None:
            check_matrix(values, "values")
            check_unit_norm(values, "values")
    elif memory.shape[0] == 0:
        raise EmbeddingError("memory: is empty (0 rows)")
    if values is not None and values.shape[0] != memory.shape[0]:
        raise EmbeddingError(f"values: has {values.shape[0]} rows but memory has {memory.shape[0]}: row k of both "
                             "must be the same item")
    n = queries.shape[0]
    d = (memory if values is None else values).shape[1]
    dev = resolve_device(device)
    deterministic_cuda(dev)
    compute_dtype = _DTYPES[config.precision]
    if compute_dtype != torch.float32 and dev.type == "cpu":
        log.warning("memory.precision=%s on CPU: reduced precision is meant for GPUs and is slow here", config.precision)

    if out is not None and tuple(out.shape) != (n, d):
        raise EmbeddingError(f"out: has shape {tuple(out.shape)}, expected {(n, d)}")

    queries_t = as_tensor(queries)
    memory_t = as_tensor(memory)
    values_t = memory_t if values is None else as_tensor(values)

    query_chunk, memory_chunk = resolve_chunks(config, dev)
    if config.mode == "random":
        generator = torch.Generator().manual_seed(config.seed)
        index = torch.randint(memory_t.shape[0], (n,), generator=generator)
        out_t = torch.empty((n, d), dtype=torch.float32) if out is None else as_tensor(out)
        for start in range(0, n, query_chunk):
            rows = index[start:start + query_chunk]
            out_t[start:start + rows.shape[0]] = values_t[rows].float()
        return out_t if out is None else out

    if config.mode == "softmax" and resolve_kernel(config, dev) == "sdpa":
        keys = memory_t.to(dev, dtype=compute_dtype).unsqueeze(0)  # on the CPU a zero-copy view of the memory
        vals = keys if values is None else values_t.to(dev, dtype=compute_dtype).unsqueeze(0)

        def aggregate_chunk(q: torch.Tensor) -> torch.Tensor:
            q = q.to(compute_dtype).unsqueeze(0)
            return F.scaled_dot_product_attention(q, keys, vals, scale=1.0 / config.temperature)[0]
    else:
        # Memory chunks are staged on the compute device once (on a GPU the whole memory usually fits;
        # on the CPU this is a zero-copy view) and re-read for every query chunk.
        # Each chunk is (keys, values): the same tensor for Eq. 2.
        def stage(s: int, **kw) -> tuple[torch.Tensor, torch.Tensor]:
            key = memory_t[s:s + memory_chunk].to(**kw)
            return key, (key if values is None else values_t[s:s + memory_chunk].to(**kw))

        memory_chunks = [stage(s, device=dev, dtype=compute_dtype, non_blocking=True)
                         for s in range(0, memory_t.shape[0], memory_chunk)] if dev.type != "cpu" else None

        def chunk_iter():
            if memory_chunks is not None:
                yield from memory_chunks
            else:
                for s in range(0, memory_t.shape[0], memory_chunk):
                    yield stage(s, dtype=compute_dtype)

        def aggregate_chunk(q: torch.Tensor) -> torch.Tensor:
            if config.mode == "softmax":
                return _softmax_aggregate_chunk(q, chunk_iter(), 1.0 / config.temperature, compute_dtype)
            return _argmax_aggregate_chunk(q, chunk_iter(), compute_dtype)

    # Without ``out``, chunk results are kept and joined once; a single chunk (up to 65,536 queries with
    # SDPA on the CPU) is returned as computed, with no copy.
    out_t = None if out is None else as_tensor(out)
    pieces: list[torch.Tensor] = []
    # tqdm's first bar starts a lock and a monitor thread (~2 ms): none when no bar is shown
    bar = tqdm(total=n, desc=desc, unit="q", unit_scale=True) if progress else None
    with flush_denormals(dev):
        for start in range(0, n, query_chunk):
            q = queries_t[start:start + query_chunk].to(dev, dtype=torch.float32)
            piece = aggregate_chunk(q).to("cpu", dtype=torch.float32)
            if out_t is None:
                pieces.append(piece)
            else:
                out_t[start:start + q.shape[0]] = piece
            if bar is not None:
                bar.update(q.shape[0])
    if bar is not None:
        bar.close()
    if out is not None:
        return out
    if not pieces:
        return torch.empty((0, d), dtype=torch.float32)
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces)


#: Chunk sizes (query × memory) that ``auto`` means, from ``bench_memory.py sweep`` (benchmarks/RESULTS.md):
#: on the CPU 1024 queries per SDPA call (the memory chunk only matters for the streamed kernel there);
#: on a GPU, bigger tiles: 8192 × 65536 ran 2.1× faster than 1024 × 4096 in bf16 and 1.27× in fp32
#: (H200, 50k × 1.8M), for 2 GiB of fp32 logits per tile.
AUTO_CHUNKS = {"cpu": (1024, 4096), "cpu_sdpa": (65536, 4096), "accelerator": (8192, 65536)}


def resolve_chunks(config: MemoryConfig, device: torch.device) -> tuple[int, int]:
    """``(query_chunk, memory_chunk)`` for ``device``: the configured integers, or ``AUTO_CHUNKS``.

    With the SDPA kernel on the CPU (softmax, fp32: the default there) ``auto`` sends up to 65,536 queries
    per call: SDPA streams over the memory itself, so a call holds only its queries and outputs (128 MB at
    d = 512), and up to that many queries Eq. 2 *is* one SDPA call, its output returned as is (no copy).
    The streamed and argmax kernels materialise query_chunk × memory_chunk logits: 1024 × 4096 there."""
    if device.type != "cpu":
        auto = AUTO_CHUNKS["accelerator"]
    elif config.mode == "softmax" and resolve_kernel(config, device) == "sdpa":
        auto = AUTO_CHUNKS["cpu_sdpa"]
    else:
        auto = AUTO_CHUNKS["cpu"]
    return (auto[0] if config.query_chunk == "auto" else int(config.query_chunk),
            auto[1] if config.memory_chunk == "auto" else int(config.memory_chunk))


def resolve_kernel(config: MemoryConfig, device: torch.device) -> str:
    """The softmax kernel ``config.kernel`` means on ``device``: ``auto`` is ``sdpa`` for fp32 on the CPU,
    ``streamed`` otherwise (a GPU stages the memory in chunks; reduced precision keeps fp32 statistics)."""
    if config.kernel != "auto":
        return config.kernel
    return "sdpa" if device.type == "cpu" and config.precision == "fp32" else "streamed"


#: A chunk whose un-normalised weights (relative to the running shift) sum above this is recomputed
#: with a fresh shift. Far below fp32's 3.4e38, so sums over any number of chunks stay finite.
_RESHIFT_ABOVE = 1e30


def _softmax_aggregate_chunk(q: torch.Tensor, memory_chunks, inv_tau: float, dtype: torch.dtype) -> torch.Tensor:
    """Online-softmax attention of one query chunk over all memory chunks (flash-attention style).

    Keeps a per-row shift ``m``, a normaliser ``l = Σ exp(s - m)`` and a weighted sum
    ``acc = Σ exp(s - m) v``. The shift is the exact row max of the first chunk and is only moved
    ("lazy rescaling") when a later chunk's weights would leave fp32's safe range; then ``l`` and
    ``acc`` are rescaled by ``exp(m_old - m_new)``. Any shift gives the same softmax; a lazy one saves
    a max pass and a subtraction pass per chunk, folding the shift into the similarity product.
    """
    qs = (q * inv_tau).to(dtype)  # fold 1/τ1 into the queries: one pass over q×d instead of over q×M
    if q.device.type != "cpu":
        return _online_softmax_chunk(qs, memory_chunks, dtype)
    rows = q.shape[0]
    shift: torch.Tensor | None = None
    run_sum = torch.zeros((rows, 1), device=q.device)
    acc = None
    for mem, val in memory_chunks:
        if acc is None:
            acc = torch.zeros((rows, val.shape[1]), device=q.device)
        if shift is not None:
            # exp(s/τ1 - m): the shift rides in the product's bias, no separate pass.
            weights = torch.addmm(-shift, qs, mem.T) if dtype == torch.float32 else (qs @ mem.T).float().sub_(shift)
            weights.exp_()
            chunk_sum = weights.sum(dim=1, keepdim=True)
            if bool((chunk_sum <= _RESHIFT_ABOVE).all()):  # also False for inf/NaN
                run_sum.add_(chunk_sum)
                _accumulate(acc, weights, val, dtype)
                continue
        # First chunk, or the lazy shift is too low for this chunk: recompute with the exact max.
        shift = _exact_max_step(qs, mem, val, shift, run_sum, acc, dtype)
    return acc.div_(run_sum)


def _online_softmax_chunk(qs: torch.Tensor, memory_chunks, dtype: torch.dtype) -> torch.Tensor:
    """The same online softmax with the exact running max moved at every chunk (no lazy shift).

    Used on accelerators: the lazy shift's overflow test needs a device→host read per chunk, which
    stalls a GPU's queue, while the extra max/rescale passes are cheap there. ``qs`` already holds
    the queries scaled by 1/τ1. Never reads a value back to the host.
    """
    rows = qs.shape[0]
    shift: torch.Tensor | None = None
    run_sum = torch.zeros((rows, 1), device=qs.device)
    acc = None
    for mem, val in memory_chunks:
        if acc is None:
            acc = torch.zeros((rows, val.shape[1]), device=qs.device)
        shift = _exact_max_step(qs, mem, val, shift, run_sum, acc, dtype)
    return acc.div_(run_sum)


def _exact_max_step(qs: torch.Tensor, mem: torch.Tensor, val: torch.Tensor, shift: torch.Tensor | None,
                    run_sum: torch.Tensor, acc: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """One chunk of the online softmax with the exact running max: move the shift to ``max(shift, rowmax)``,
    rescale ``run_sum`` and ``acc`` by ``exp(old - new)``, add this chunk's ``exp(s - shift)`` and its
    weighted values (``val``: the memory chunk itself for Eq. 2). Updates ``run_sum`` / ``acc`` in place; returns the new shift. No host reads."""
    logits = (qs @ mem.T).float()
    chunk_max = logits.amax(dim=1, keepdim=True)
    new_shift = chunk_max if shift is None else torch.maximum(shift, chunk_max)
    if shift is not None:
        rescale = torch.exp(shift - new_shift)
        run_sum.mul_(rescale)
        acc.mul_(rescale)
    logits.sub_(new_shift).exp_()
    run_sum.add_(logits.sum(dim=1, keepdim=True))
    _accumulate(acc, logits, val, dtype)
    return new_shift


def _accumulate(acc: torch.Tensor, weights: torch.Tensor, mem: torch.Tensor, dtype: torch.dtype) -> None:
    """``acc += weights @ mem`` (in ``dtype`` for the product, fp32 for the sum)."""
    if dtype == torch.float32:
        acc.addmm_(weights, mem)
    else:
        acc.add_((weights.to(dtype) @ mem).float())


def _argmax_aggregate_chunk(q: torch.Tensor, memory_chunks, dtype: torch.dtype) -> torch.Tensor:
    """Table 5 row I: the single most similar memory item (first one on ties)."""
    qs = q.to(dtype)
    best = torch.full((q.shape[0],), -math.inf, device=q.device)
    best_rows = None
    for mem, val in memory_chunks:
        if best_rows is None:
            best_rows = torch.zeros((q.shape[0], val.shape[1]), device=q.device)
        sims = (qs @ mem.T).float()
        value, index = sims.max(dim=1)
        better = value > best
        best = torch.where(better, value, best)
        best_rows[better] = val[index[better]].float()
    return best_rows


def aggregate_memory_naive(queries: torch.Tensor, memory: torch.Tensor, temperature: float,
                           values: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 2 as printed, materialising the full N×M similarity matrix (``values``: see :func:`aggregate_memory`).

    Reference for tests and the baseline of ``benchmarks/bench_memory.py``; never use it at scale.
    """
    weights = torch.softmax(queries @ memory.T / temperature, dim=1)
    return weights @ (memory if values is None else values)
