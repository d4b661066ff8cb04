"""Benchmark: streamed Eq. 2 (cmcr.memory.aggregate_memory) vs the naive materialised formula, on CPU.

    python benchmarks/bench_memory.py                       # default sizes (a few minutes on 2 cores)
    python benchmarks/bench_memory.py --sizes 4000x40000    # quick

Each measurement runs in a fresh subprocess so its peak resident memory (ru_maxrss) is its own.
Prints, per size: wall time, peak RSS, and peak RSS above the inputs; the two matrix products that
both methods must do (2 · N · M · d FLOPs each) are timed alone as the floor ("GEMM floor").
A size whose naive N×M matrices would not fit in RAM is run streamed only.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

import typer

app = typer.Typer(add_completion=False)


def _inputs(n: int, m: int, d: int):
    import torch

    g = torch.Generator().manual_seed(0)
    q, mem = torch.randn(n, d, generator=g), torch.randn(m, d, generator=g)
    q /= q.norm(dim=1, keepdim=True)  # in place: the baseline peak is the inputs, not temporaries
    mem /= mem.norm(dim=1, keepdim=True)
    return q, mem


@app.command()
def one(method: str, n: int, m: int, d: int = 512, tau: float = 0.01, query_chunk: int = 1024, memory_chunk: int = 4096) -> None:
    """(internal) run one measurement and print JSON."""
    import torch

    from cmcr.config import MemoryConfig
    from cmcr.memory import aggregate_memory, aggregate_memory_naive

    q, mem = _inputs(n, m, d)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if method == "streamed":
        out = aggregate_memory(q, mem, MemoryConfig(temperature=tau, query_chunk=query_chunk, memory_chunk=memory_chunk),
                               device="cpu", check_inputs=False)
    elif method == "naive":
        out = aggregate_memory_naive(q, mem, tau)
    elif method == "gemm":  # the two products alone, chunked exactly like the streamed method
        out = torch.empty(n, d)
        for s in range(0, n, query_chunk):
            acc = torch.zeros(min(query_chunk, n - s), d)
            for t in range(0, m, memory_chunk):
                chunk = mem[t:t + memory_chunk]
                acc.addmm_(q[s:s + query_chunk] @ chunk.T, chunk)
            out[s:s + query_chunk] = acc
    else:
        raise typer.BadParameter(method)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"method": method, "seconds": seconds, "peak_gib": peak / 2**20,
                      "extra_gib": (peak - base) / 2**20, "checksum": float(out.double().sum())}))


def _run(method: str, n: int, m: int, d: int) -> dict:
    cmd = [sys.executable, __file__, "one", method, str(n), str(m), "--d", str(d)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        return {"method": method, "error": (res.stderr.strip().splitlines() or ["killed"])[-1]}
    return json.loads(res.stdout.strip().splitlines()[-1])


@app.command()
def main(sizes: str = "20000x100000,50000x200000", d: int = 512) -> None:
    """Compare streamed and naive Eq. 2 at each N×M size."""
    import torch

    ram_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    print(f"CPU threads: {torch.get_num_threads()}, RAM {ram_gib:.1f} GiB, d={d}, tau1=0.01, fp32, "
          "chunks 1024 x 4096")
    for size in sizes.split(","):
        n, m = (int(x) for x in size.lower().split("x"))
        naive_need = 2 * n * m * 4 / 2**30  # logits + softmax output alive together
        print(f"\nN={n:,} queries x M={m:,} memory  (naive needs ~{naive_need:.1f} GiB for two N×M fp32 matrices)")
        rows = [_run("streamed", n, m, d), _run("gemm", n, m, d)]
        if naive_need < 0.8 * ram_gib:
            rows.append(_run("naive", n, m, d))
        else:
            print(f"  naive: skipped, would need ~{naive_need:.0f} GiB > {ram_gib:.0f} GiB RAM")
        for r in rows:
            if "error" in r:
                print(f"  {r['method']:>9}: failed ({r['error']})")
                continue
            gflops = 4 * n * m * d / r["seconds"] / 1e9
            print(f"  {r['method']:>9}: {r['seconds']:8.2f} s  {gflops:6.1f} GFLOP/s  peak RSS {r['peak_gib']:6.2f} GiB "
                  f"(+{r['extra_gib']:.2f} GiB over inputs)")
        by = {r["method"]: r for r in rows if "error" not in r}
        if "naive" in by and "streamed" in by:
            s, v = by["streamed"], by["naive"]
            print(f"  streamed vs naive: {v['seconds'] / s['seconds']:.2f}x faster, "
                  f"{s['extra_gib'] / v['extra_gib']:.4f} of its extra memory, "
                  f"checksum diff {abs(s['checksum'] - v['checksum']):.2e}")


if __name__ == "__main__":
    app()
