"""Benchmark Eq. 2: cmcr's aggregate_memory against what a user would pick instead, in one run.

    python benchmarks/bench_memory.py main                                   # default sizes and orders
    python benchmarks/bench_memory.py main --sizes 5000x20000 --repeats 3    # quick
    python benchmarks/bench_memory.py main --orders random,clustered,ordered
    python benchmarks/bench_memory.py main --device cuda [--precision bf16] --sizes 200000x1800000
    python benchmarks/bench_memory.py sweep --sizes 5000x20000               # query_chunk sweep (sdpa kernel)
    python benchmarks/bench_memory.py sweep --device cuda --chunks 1024x4096,8192x65536  # GPU chunk pairs

Methods (each run in a fresh subprocess, so its peak memory is its own: ru_maxrss on the CPU,
``torch.cuda.max_memory_allocated`` on a GPU; inputs start on the host and results come back to it):

- ``ours``: ``aggregate_memory`` with the project's defaults (``memory.kernel: auto``);
- ``streamed``: ``aggregate_memory`` with ``kernel=streamed`` (the project's own online softmax);
- ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` called on all queries at once, the
  one-liner a user would write (keys = values = the memory, scale 1/τ1);
- ``gemm``: the two matrix products alone, chunked (2 · N · M · d FLOPs each);
- ``naive``: ``softmax(Q Mᵀ / τ1) M`` materialised (only where two N×M matrices fit).

Memory orders: ``random`` (unit Gaussian directions), ``clustered`` (200 tight clusters, items shuffled)
and ``ordered`` (the same clusters listed class by class, as ImageNet's training set is folder by folder).
Methods are interleaved (round robin, the order reversed every other round) ``--repeats`` times; the table gives the median and the range, and
the ratio of each method's median to SDPA's. Each result is checked against the float64 formula on
a sample of rows (max abs error).
"""

from __future__ import annotations

import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time

import typer

app = typer.Typer(add_completion=False)
ORDERS = ("random", "clustered", "ordered")


def _inputs(n: int, m: int, d: int, order: str = "random"):
    import torch

    g = torch.Generator().manual_seed(0)
    q = torch.randn(n, d, generator=g)
    if order == "random":
        mem = torch.randn(m, d, generator=g)
    else:  # 200 tight clusters (cosine to their centre ~0.9); queries near the centres too
        centres = torch.randn(200, d, generator=g)
        label = torch.randint(200, (m,), generator=g)
        if order == "ordered":
            label = label.sort().values
        mem = centres[label] * 3.0 + torch.randn(m, d, generator=g)
        q = centres[torch.randint(200, (n,), generator=g)] * 3.0 + torch.randn(n, d, generator=g)
    q /= q.norm(dim=1, keepdim=True)  # in place: the baseline peak is the inputs, not temporaries
    mem /= mem.norm(dim=1, keepdim=True)
    return q, mem


def _max_error(q, mem, out, tau: float, rows: int = 64) -> float:
    import torch

    idx = torch.linspace(0, q.shape[0] - 1, min(rows, q.shape[0])).long()
    ref = torch.softmax(q[idx].double() @ mem.double().T / tau, dim=1) @ mem.double()
    return float((out[idx].double() - ref).abs().max())


@app.command()
def one(method: str, n: int, m: int, d: int = 512, tau: float = 0.01, query_chunk: str = "auto",
        memory_chunk: str = "auto", device: str = "cpu", precision: str = "fp32", order: str = "random") -> None:
    """(internal) run one measurement and print JSON."""
    import torch
    import torch.nn.functional as F

    from cmcr.config import MemoryConfig
    from cmcr.memory import aggregate_memory, aggregate_memory_naive, resolve_chunks

    dev = torch.device(device)
    chunks = MemoryConfig(query_chunk=_chunk(query_chunk), memory_chunk=_chunk(memory_chunk))
    query_chunk, memory_chunk = resolve_chunks(chunks, dev)
    cuda = dev.type == "cuda"
    q, mem = _inputs(n, m, d, order)
    if cuda:
        torch.cuda.init()
        torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    if method in ("ours", "streamed"):
        kernel = "auto" if method == "ours" else "streamed"
        out = aggregate_memory(q, mem, MemoryConfig(temperature=tau, query_chunk=query_chunk, memory_chunk=memory_chunk,
                                                    precision=precision, kernel=kernel), device=dev, check_inputs=False)
    elif method == "sdpa":
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        keys = mem.to(dev, dtype).unsqueeze(0)
        out = F.scaled_dot_product_attention(q.to(dev, dtype).unsqueeze(0), keys, keys, scale=1 / tau)[0].float().cpu()
    elif method == "naive":
        out = aggregate_memory_naive(q.to(dev), mem.to(dev), tau).cpu()
    elif method == "gemm":  # the two products alone, chunked like the streamed method
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
    error = None if method == "gemm" else _max_error(q, mem, out, tau)
    print(json.dumps({"method": method, "seconds": seconds, "peak_gib": peak / 2**30,
                      "extra_gib": (peak - base) / 2**30, "max_error": error}))


def _chunk(value: str) -> int | str:
    return value if value == "auto" else int(value)


def _environment(kernels: str) -> dict[str, str]:
    """``native``: this shell's environment (each library picks its code path for the processor); ``pinned``: the
    stages' CPU kernel paths (cmcr.reproducibility, AVX2) on top of it, the thread count left as it is."""
    from cmcr.reproducibility import stage_environment

    if kernels == "native":
        return dict(os.environ)
    if kernels == "pinned":
        return {**os.environ, **stage_environment().kernels}
    raise typer.BadParameter(f"kernels must be native or pinned, got {kernels!r}")


def _run(method: str, n: int, m: int, d: int, device: str, precision: str, order: str, query_chunk="auto",
         memory_chunk="auto", kernels: str = "native") -> dict:
    cmd = [sys.executable, __file__, "one", method, str(n), str(m), "--d", str(d), "--device", device,
           "--precision", precision, "--order", order, "--query-chunk", str(query_chunk),
           "--memory-chunk", str(memory_chunk)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=_environment(kernels))
    if res.returncode != 0:
        return {"method": method, "error": _error_line(res.stderr)}
    return json.loads(res.stdout.strip().splitlines()[-1])


def _error_line(stderr: str) -> str:
    """The exception's own line from a traceback (e.g. ``torch.OutOfMemoryError: ...``), cut to 120 chars."""
    lines = [x.strip() for x in stderr.strip().splitlines() if x.strip()]
    found = [x for x in lines if re.match(r"^[\w.]*(Error|Exception)\b", x)]
    return ((found or lines or ["killed"])[-1])[:120]


def _where(device: str) -> tuple[float, str]:
    import torch

    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        return props.total_memory / 2**30, f"{props.name}, {props.total_memory / 2**30:.0f} GiB"
    capacity = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return capacity, f"CPU threads: {torch.get_num_threads()}, RAM {capacity:.1f} GiB"


@app.command()
def main(sizes: str = "5000x20000,20000x100000", orders: str = "random,clustered,ordered", d: int = 512,
         device: str = "cpu", precision: str = "fp32", repeats: int = 3,
         methods: str = "ours,sdpa,streamed,gemm,naive", query_chunk: str = "auto", memory_chunk: str = "auto",
         kernels: str = "native") -> None:
    """Compare Eq. 2 implementations at each N×M size and memory order (median of interleaved runs).

    ``--kernels native,pinned`` runs each method both ways (the shell's CPU code paths, and the stages' pinned AVX2
    paths of cmcr.reproducibility), interleaved, and prints each method's pinned / native ratio."""
    capacity, where = _where(device)
    label = "peak GPU memory" if device.startswith("cuda") else "peak RSS"
    modes = kernels.split(",")
    print(f"{where}, d={d}, tau1=0.01, {precision}, chunks {query_chunk}x{memory_chunk} (query x memory; auto: cmcr.memory.AUTO_CHUNKS), "
          f"{repeats} interleaved run(s) per method, CPU kernels {' and '.join(modes)}")
    for size in sizes.split(","):
        n, m = (int(x) for x in size.lower().split("x"))
        naive_need = 2 * n * m * 4 / 2**30  # logits + softmax output alive together
        for order in orders.split(","):
            print(f"\nN={n:,} x M={m:,}, memory order '{order}'")
            wanted = [f"{x}@{k}" if len(modes) > 1 else x for x in methods.split(",") for k in modes
                      if x != "naive" or naive_need < 0.6 * capacity]
            runs: dict[str, list[dict]] = {x: [] for x in wanted}
            for repeat in range(repeats):  # round robin, the order reversed every other round (no position bias)
                for label_ in (wanted if repeat % 2 == 0 else wanted[::-1]):
                    method, _, mode = label_.partition("@")
                    runs[label_].append(_run(method, n, m, d, device, precision, order, query_chunk, memory_chunk,
                                             mode or modes[0]))
            medians = {}
            for method, rs in runs.items():
                ok = [r for r in rs if "error" not in r]
                if not ok:
                    print(f"  {method:>16}: failed ({rs[0]['error']})")
                    continue
                times = [r["seconds"] for r in ok]
                medians[method] = statistics.median(times)
                err = max((r["max_error"] or 0.0) for r in ok) if ok[0]["max_error"] is not None else None
                print(f"  {method:>16}: {medians[method]:8.2f} s [{min(times):.2f}–{max(times):.2f}]  "
                      f"{4 * n * m * d / medians[method] / 1e9:7.1f} GFLOP/s  {label} "
                      f"{max(r['peak_gib'] for r in ok):6.2f} GiB (+{max(r['extra_gib'] for r in ok):.2f})"
                      + (f"  max |err| {err:.1e}" if err is not None else ""))
            for mode in modes:
                sdpa = "sdpa" if len(modes) == 1 else f"sdpa@{mode}"
                if sdpa in medians:
                    print(f"  time / SDPA{'' if len(modes) == 1 else ' (' + mode + ')'}: " + ", ".join(
                        f"{k.split('@')[0]} {v / medians[sdpa]:.2f}x" for k, v in medians.items()
                        if len(modes) == 1 or k.endswith('@' + mode)))
            if len(modes) > 1:
                print("  time pinned / native: " + ", ".join(
                    f"{k.split('@')[0]} {v / medians[k.split('@')[0] + '@native']:.2f}x" for k, v in medians.items()
                    if k.endswith("@pinned") and k.split("@")[0] + "@native" in medians))
            if "naive" not in wanted:
                print(f"  naive: skipped, would need ~{naive_need:.0f} GiB")


@app.command()
def sweep(sizes: str = "5000x20000", chunks: str = "256,1024,4096,16384", order: str = "random", d: int = 512,
          device: str = "cpu", precision: str = "fp32", repeats: int = 3) -> None:
    """Time the default kernel at several chunk sizes (the defaults are picked from this).

    ``--chunks`` lists query chunks (``1024``) or query x memory chunk pairs (``8192x65536``)."""
    _, where = _where(device)
    print(f"{where}, d={d}, order {order}, kernel auto, {precision}, {repeats} interleaved run(s)")
    pairs = [tuple(int(x) for x in c.split("x")) if "x" in c else (int(c), 4096) for c in chunks.split(",")]
    for size in sizes.split(","):
        n, m = (int(x) for x in size.lower().split("x"))
        times: dict[tuple, list[float]] = {p: [] for p in pairs}
        errors: dict[tuple, str] = {}
        for repeat in range(repeats):
            for p in (pairs if repeat % 2 == 0 else pairs[::-1]):
                r = _run("ours", n, m, d, device, precision, order, query_chunk=p[0], memory_chunk=p[1])
                if "error" in r:
                    errors[p] = r["error"]
                else:
                    times[p].append(r["seconds"])
        print(f"N={n:,} x M={m:,}: " + ", ".join(
            f"chunks {p[0]}x{p[1]}: " + (f"{statistics.median(t):.2f} s" if t else f"failed ({errors.get(p)})")
            for p, t in times.items()))


if __name__ == "__main__":
    app()
