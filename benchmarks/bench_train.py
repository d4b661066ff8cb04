"""Benchmark: one epoch of C-MCR training at the paper's batch size on synthetic rows kept on the device.

    python benchmarks/bench_train.py                       # paper scale: 2.33M rows, batch 10240 (GPU)
    python benchmarks/bench_train.py --rows 20000 --batch-size 1024 --device cpu   # quick

The four training matrices (shared and Eq. 2 aggregates of both spaces, 512-d, unit rows) are drawn
directly on the device, as the trainer keeps them (no DataLoader); prints steps/s, rows/s, the epoch's
wall time and the extrapolation to the paper's 36 epochs, and peak GPU memory.
"""

from __future__ import annotations

import time

import typer

app = typer.Typer(add_completion=False)


@app.command()
def main(rows: int = 2_330_000, batch_size: int = 10240, epochs: int = 1, d: int = 512, device: str = "auto",
         paper_epochs: int = 36) -> None:
    import torch

    from cmcr.config import ConnectionConfig, ProjectorConfig, TrainConfig, connection_of
    from cmcr.params import load_params
    from cmcr.device import resolve_device
    from cmcr.graph import train_connection
    from cmcr.train import ConnectionData

    dev = resolve_device(device)
    CLIP_CLAP = connection_of(load_params("params.yaml"), "clip_clap")  # the link as the project declares it
    g = torch.Generator(device=dev).manual_seed(0)

    def unit_rows() -> torch.Tensor:
        x = torch.randn(rows, d, generator=g, device=dev)
        return x.div_(x.norm(dim=1, keepdim=True))

    data = ConnectionData(shared={"clip": unit_rows(), "clap": unit_rows()}, memory={"clip": unit_rows(), "clap": unit_rows()})
    config = ConnectionConfig(connection=CLIP_CLAP, projector=ProjectorConfig(in_dims={"clip": d, "clap": d}),
                              train=TrainConfig(epochs=epochs, batch_size=batch_size, device=str(dev)))
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = train_connection(data, config, progress=False)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    steps = epochs * (rows // batch_size + (rows % batch_size > 1))
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{name}: {rows:,} rows × {d}, batch {batch_size}, {epochs} epoch(s): {seconds:.2f} s, "
          f"{steps / seconds:.1f} steps/s, {rows * epochs / seconds:,.0f} rows/s; "
          f"{paper_epochs} epochs ≈ {seconds / epochs * paper_epochs / 60:.1f} min; final loss {result.history['joint'][-1]['loss']:.4f}"
          + (f"; peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if dev.type == "cuda" else ""))


if __name__ == "__main__":
    app()
