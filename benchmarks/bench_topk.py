"""Measurement for the top-k decision (issue: "Top-k mode, only if it earns its place").

Would Eq. 2 over each query's k most similar memory items, found by an approximate index (faiss IVF),
be worth shipping as ``memory.mode: topk``? The rule fixed beforehand: only if it is ≥ 5× faster than
the exact default at M ≥ 1M with a mean cosine distance to exact Eq. 2 ≤ 1e-4. This script measures it;
it is not part of the library (faiss is not a dependency: ``pip install faiss-cpu`` to run it).

    python benchmarks/bench_topk.py --n 2000 --m 1000000 --orders random,clustered
    python benchmarks/bench_topk.py --demo data/embeddings/clip   # the demo's CLIP text → image memory

Prints, per memory: exact time (``aggregate_memory`` defaults), the index build time, the search +
aggregation time per setting (nlist, nprobe, k), the softmax mass the top-k misses (from the exact
log-sum-exp), the mean and max cosine distance to exact Eq. 2, and the speed-up with and without the
build (at the paper's N = 2.33M queries the build is paid once).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
import typer

sys.path.insert(0, str(Path(__file__).resolve().parent))
app = typer.Typer(add_completion=False)


def exact_logsumexp(q: torch.Tensor, mem: torch.Tensor, tau: float, chunk: int = 65536) -> torch.Tensor:
    """log Σ_k exp(q·m_k / τ) per query, streamed over the memory (for the missed mass only)."""
    out = torch.full((q.shape[0],), -float("inf"), dtype=torch.float64)
    for s in range(0, mem.shape[0], chunk):
        out = torch.logaddexp(out, torch.logsumexp((q @ mem[s:s + chunk].T).double() / tau, dim=1))
    return out


def measure(name: str, q: torch.Tensor, mem: torch.Tensor, tau: float, settings: list[tuple[int, int, int]],
            paper_queries: int = 2_330_000) -> None:
    import faiss

    from cmcr.config import MemoryConfig
    from cmcr.memory import aggregate_memory

    n, m = q.shape[0], mem.shape[0]
    start = time.perf_counter()
    exact = aggregate_memory(q, mem, MemoryConfig(temperature=tau), device="cpu", check_inputs=False)
    t_exact = time.perf_counter() - start
    lse = exact_logsumexp(q, mem, tau)
    print(f"\n{name}: N={n:,} queries x M={m:,} memory; exact Eq. 2 {t_exact:.2f} s "
          f"({t_exact / n * 1e3:.3f} ms/query)")
    mem_np, q_np = np.ascontiguousarray(mem.numpy()), np.ascontiguousarray(q.numpy())
    built: dict[int, tuple[object, float]] = {}
    for nlist, nprobe, k in settings:
        if nlist not in built:
            start = time.perf_counter()
            quantizer = faiss.IndexFlatIP(mem.shape[1])
            index = faiss.IndexIVFFlat(quantizer, mem.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
            sample = mem_np[np.random.default_rng(0).choice(m, min(m, 64 * nlist), replace=False)]
            index.train(sample)
            index.add(mem_np)
            built[nlist] = (index, time.perf_counter() - start)
        index, t_build = built[nlist]
        index.nprobe = nprobe
        start = time.perf_counter()
        scores, ids = index.search(q_np, k)
        ids_t = torch.from_numpy(ids).clamp(min=0)
        scores_t = torch.from_numpy(scores)
        scores_t[torch.from_numpy(ids) < 0] = -float("inf")
        weights = torch.softmax(scores_t / tau, dim=1)
        approx = torch.einsum("nk,nkd->nd", weights, mem[ids_t])
        t_search = time.perf_counter() - start
        kept = torch.logsumexp(scores_t.double() / tau, dim=1)
        missed = (1 - torch.exp(kept - lse)).clamp(min=0)
        cos = 1 - torch.nn.functional.cosine_similarity(approx.double(), exact.double(), dim=1)
        per_query = t_search / n
        paper_exact = t_exact / n * paper_queries
        paper_approx = per_query * paper_queries + t_build
        print(f"  IVF{nlist} nprobe {nprobe:>3} k {k:>4}: search+Eq.2 {t_search:6.2f} s (build {t_build:5.1f} s); "
              f"missed mass mean {float(missed.mean()):.1e} max {float(missed.max()):.1e}; "
              f"cosine distance mean {float(cos.mean()):.1e} max {float(cos.max()):.1e}; "
              f"speed-up {t_exact / t_search:5.1f}x here, {paper_exact / paper_approx:5.1f}x at N=2.33M incl. build")


@app.command()
def main(n: int = 2000, m: int = 1_000_000, d: int = 512, tau: float = 0.01, orders: str = "random,clustered",
         demo: str | None = None, settings: str = "1024:8:256,1024:32:512,4096:32:512") -> None:
    from bench_memory import _inputs

    torch.set_num_threads(torch.get_num_threads())
    parsed = [tuple(int(x) for x in s.split(":")) for s in settings.split(",")]
    print(f"CPU threads {torch.get_num_threads()}, tau1={tau}; settings nlist:nprobe:k = {settings}")
    if demo:
        folder = Path(demo)
        q = torch.from_numpy(np.load(folder / "text.npy"))
        mem = torch.from_numpy(np.load(folder / "image.npy"))
        small = [(min(nlist, mem.shape[0] // 64), nprobe, min(k, mem.shape[0])) for nlist, nprobe, k in parsed]
        measure(f"demo {folder.name} text → image memory", q, mem, tau, small)
    for order in [o for o in orders.split(",") if o]:
        q, mem = _inputs(n, m, d, order)
        measure(f"synthetic '{order}' memory", q, mem, tau, parsed)


if __name__ == "__main__":
    app()
