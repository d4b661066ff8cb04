"""Benchmark: streamed Eq. 2 (cmcr.memory.aggregate_memory) vs the naive materialised formula.

    python benchmarks/bench_memory.py main                  # default sizes (a few minutes on 2 cores)
    python benchmarks/bench_memory.py main --sizes 4000x40000    # quick
    python benchmarks/bench_memory.py main --device cuda [--precision bf16] --sizes 100000x1300000

Each measurement runs in a fresh subprocess so its peak memory is its own: resident memory (ru_maxrss)
on the CPU, ``torch.cuda.max_memory_allocated`` on a GPU. Inputs start on the host and results come
back to it in every method, as in the pipeline. Prints, per size: wall time, peak memory and peak above
the inputs; the two matrix products that both methods must do (2 · N · M · d FLOPs each) are timed
alone as the floor ("gemm", fp32). A size whose naive N×M matrices would not fit is run streamed only.
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
def one(method: str, n: int, m: int, d: int = 512, tau: float = 0.01, query_chunk: int = 1024, memory_chunk: int = 4096,
        device: str = "cpu", precision: str = "fp32") -> None:
    """(internal) run one measurement and print JSON."""
    import torch

    from cmcr.config import MemoryConfig
    from cmcr.memory import aggregate_memory, aggregate_memory_naive

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    q, mem = _inputs(n, m, d)
    if cuda:
        torch.cuda.init()
        torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    if method == "streamed":
        out = aggregate_memory(q, mem, MemoryConfig(temperature=tau, query_chunk=query_chunk, memory_chunk=memory_chunk,
                                                    precision=precision), device=dev, check_inputs=False)
    elif method == "naive":
        out = aggregate_memory_naive(q.to(dev), mem.to(dev), tau).cpu()
    elif method == "gemm":  # the two products alone, chunked exactly like the streamed method
        out = torch.empty(n, d)
        chunks = [mem[t:t + memory_chunk].to(dev) for t in range(0, m, memory_chunk)]
        for s in range(0, n, query_chunk):
            qs = q[s:s + query_chunk].to(dev)
            acc = torch.zeros(qs.shape[0], d, device=dev)
            for chunk in chunks:
                acc.addmm_(qs @ chunk.T, chunk)
            out[s:s + query_chunk] = acc.cpu()
    else:
        raise typer.BadParameter(method)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"method": method, "seconds": seconds, "peak_gib": peak / 2**30,
                      "extra_gib": (peak - base) / 2**30, "checksum": float(out.double().sum())}))


def _run(method: str, n: int, m: int, d: int, device: str, precision: str) -> dict:
    cmd = [sys.executable, __file__, "one", method, str(n), str(m), "--d", str(d), "--device", device,
           "--precision", precision]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        return {"method": method, "error": (res.stderr.strip().splitlines() or ["killed"])[-1]}
    return json.loads(res.stdout.strip().splitlines()[-1])


@app.command()
def main(sizes: str = "20000x100000,50000x200000", d: int = 512, device: str = "cpu", precision: str = "fp32") -> None:
    """Compare streamed and naive Eq. 2 at each N×M size."""
    import torch

    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        capacity, where = props.total_memory / 2**30, f"{props.name}, {props.total_memory / 2**30:.0f} GiB"
    else:
        capacity = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        where = f"CPU threads: {torch.get_num_threads()}, RAM {capacity:.1f} GiB"
    label = "peak GPU memory" if device.startswith("cuda") else "peak RSS"
    print(f"{where}, d={d}, tau1=0.01, streamed in {precision}, chunks 1024 x 4096")
    for size in sizes.split(","):
        n, m = (int(x) for x in size.lower().split("x"))
        naive_need = 2 * n * m * 4 / 2**30  # logits + softmax output alive together
        print(f"\nN={n:,} queries x M={m:,} memory  (naive needs ~{naive_need:.1f} GiB for two N×M fp32 matrices)")
        rows = [_run("streamed", n, m, d, device, precision), _run("gemm", n, m, d, device, "fp32")]
        if naive_need < 0.8 * capacity:
            rows.append(_run("naive", n, m, d, device, "fp32"))
        else:
            print(f"  naive: skipped, would need ~{naive_need:.0f} GiB > {capacity:.0f} GiB")
        for r in rows:
            if "error" in r:
                print(f"  {r['method']:>9}: failed ({r['error']})")
                continue
            gflops = 4 * n * m * d / r["seconds"] / 1e9
            print(f"  {r['method']:>9}: {r['seconds']:8.2f} s  {gflops:8.1f} GFLOP/s  {label} {r['peak_gib']:6.2f} GiB "
                  f"(+{r['extra_gib']:.2f} GiB over inputs)")
        by = {r["method"]: r for r in rows if "error" not in r}
        if "naive" in by and "streamed" in by:
            s, v = by["streamed"], by["naive"]
            print(f"  streamed vs naive: {v['seconds'] / s['seconds']:.2f}x faster, "
                  f"{s['extra_gib'] / max(v['extra_gib'], 1e-9):.4f} of its extra memory, "
                  f"checksum diff {abs(s['checksum'] - v['checksum']):.2e}")


if __name__ == "__main__":
    app()
