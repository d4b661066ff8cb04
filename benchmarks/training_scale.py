"""Benchmark: what each training scale (params ``scale.mode``: small, auto, paper) costs and gives on data of
the demo's size — the situation of a ``setup: byo`` user whose embeddings are thousands, not millions, of rows.

    python benchmarks/training_scale.py                         # K and clip_ulip, scales small/auto/paper, seeds 0-2
    python benchmarks/training_scale.py --variants K --seeds 0  # quicker

Reads the demo's built embeddings and Eq. 2 aggregates (``dvc repro`` first), resolves each variant's config
from params.yaml with ``setup`` as is and ``scale.mode`` set (exactly as the validate stage would), trains it in
this process with the stages' pinned kernels and one thread (the timing of one training inside a stage), and
evaluates on the demo's benchmark sets: K on audio–image retrieval (A→I mAP), clip_ulip on zero-shot 3D
(top-1). Prints one row per variant and scale: epochs × batch as run, optimiser steps, seconds per training
(mean over seeds), the metric as mean ± std over seeds.
"""

from __future__ import annotations

from cmcr.reproducibility import pin_process

pin_process()  # before numpy / torch load: the stages' kernel paths and one thread

import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import typer  # noqa: E402

app = typer.Typer(add_completion=False)
ROOT = Path(__file__).resolve().parents[1]
METRIC = {"K": ("retrieval", lambda m: m["A2I"]["mAP"], "A→I mAP"),
          "clip_ulip": ("zeroshot3d", lambda m: m["top1"], "3D top-1")}


@app.command()
def main(variants: list[str] = typer.Option(["K", "clip_ulip"]), modes: list[str] = typer.Option(["small", "auto", "paper"]),
         seeds: list[int] = typer.Option([0, 1, 2]), params: Path = ROOT / "params.yaml") -> None:
    import torch

    from cmcr.evaluation import load_benchmark, score_model
    from cmcr.experiments import resolve_variant
    from cmcr.params import deep_merge, load_params, parse_overrides
    from cmcr.plan import variant_aggregate
    from cmcr.graph import train_connection
    from cmcr.train import ConnectionData, batch_slices

    torch.set_num_threads(1)
    embeddings, aggregated = ROOT / "data" / "embeddings", ROOT / "data" / "aggregated"
    base = load_params(params)
    print(f"setup {base.get('setup', 'demo')}, torch {torch.__version__}, 1 thread; seeds {seeds}")
    print("| variant | scale | epochs × batch (as run) | steps | s / training | metric (mean ± std) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in variants:
        benchmark, read, label = METRIC[name]
        bench, _ = load_benchmark(embeddings, benchmark, "demo")
        for mode in modes:
            v = resolve_variant(deep_merge(base, parse_overrides([f"scale.mode={mode}"])), name)
            data = ConnectionData.from_pipeline(embeddings, aggregated / variant_aggregate(base, v), v.config)
            scores, seconds = [], []
            for seed in seeds:
                started = time.perf_counter()
                result = train_connection(data, v.config.with_seed(seed), progress=False)
                seconds.append(time.perf_counter() - started)
                embed = {s: p.embed for s, p in result.projectors.items()}
                scores.append(read(score_model(bench, embed, name)[0]))
            t = result.configs[v.config.connection.name].train
            n = int(next(iter(data.shared.values())).shape[0])
            steps = t.epochs * len(batch_slices(n, t.batch_size))
            spread = statistics.stdev(scores) if len(scores) > 1 else 0.0
            whole = f" (one batch of all {n:,})" if t.batch_size >= n else ""
            print(f"| {name} ({n:,} items) | {mode} | {t.epochs} × {t.batch_size:,}{whole} | {steps:,} | "
                  f"{statistics.mean(seconds):.1f} | {label} {statistics.mean(scores):.2f} ± {spread:.2f} |", flush=True)


if __name__ == "__main__":
    app()
