"""The whole pipeline on the second public world (:mod:`cmcr.linear_world`: spaces that relate near-linearly, with
large modality gaps), through ``setup: byo`` exactly as a user's embeddings would run.

    python benchmarks/linear_world.py                  # 3 seeds, scale auto (byo's default): ~15 min on 2 cores
    python benchmarks/linear_world.py --seeds 0 --keep /tmp/lw   # one seed; keep the run's folder
    python benchmarks/linear_world.py -S projector.norm_stats=modality   # each modality its own BatchNorm statistics

Copies the pipeline (dvc.yaml, params.yaml, stages, cmcr, DVC config) into a temporary git repository, writes the
world into its ``byo/embeddings``, keeps the variants a single connection needs (K, clip_ulip and their paired-data
references) and the demo's three graphs, lists dataset ``linear`` for retrieval, zero-shot 3D and the graph
family, runs ``dvc repro`` and prints results/graph.md, Table 1 and Table 4 (each with its closed-form rows).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import typer
import yaml

app = typer.Typer(add_completion=False)
ROOT = Path(__file__).resolve().parents[1]
COPIED = ["dvc.yaml", "params.yaml", "stages", "cmcr", ".dvc/config", ".dvcignore", "byo/embeddings/README.md",
          "plugins/README.md"]


@app.command()
def main(seeds: list[int] = typer.Option([0, 1, 2]), scale: str = "setup", world_seed: int = 0,
         keep: Path = typer.Option(None, help="run in this folder (kept) instead of a temporary one"),
         set_: list[str] = typer.Option(None, "--set", "-S", help="params overrides, e.g. projector.norm_stats=modality")) -> None:
    from cmcr.linear_world import LinearWorldConfig, write_linear_world

    folder = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="cmcr-linear-world-"))
    folder.mkdir(parents=True, exist_ok=True)
    for item in COPIED:
        src, dst = ROOT / item, folder / item
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
        else:
            shutil.copy2(src, dst)
    written = write_linear_world(folder / "byo" / "embeddings", LinearWorldConfig(seed=world_seed))
    print(f"linear world (seed {world_seed}): {len(written)} sets in {folder / 'byo' / 'embeddings'}", flush=True)
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["setup"], p["seeds"] = "byo", list(seeds)
    p["scale"]["mode"] = scale
    p["variants"] = {k: p["variants"][k] for k in ("K", "clip_ulip")}
    p["variants"]["paired"] = {"group": "reference", "paired": "linear", "label": "Paired-data reference (true audio-image pairs)"}
    p["variants"]["paired_3d"] = {"group": "reference", "connection": "clip_ulip", "paired": "linear",
                                  "label": "Paired-data reference (true 3D-text pairs)"}
    p["graphs"]["paired_audio_3d"]["pairs"]["dataset"] = "linear"
    p["benchmarks"] = {"retrieval": ["linear"], "localization": [], "counterfactual": [], "zeroshot3d": ["linear"],
                       "graph": ["linear"]}
    from cmcr.params import deep_merge, parse_overrides

    p = deep_merge(p, parse_overrides(list(set_ or [])))
    (folder / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.com", "GIT_COMMITTER_NAME": "bench",
           "GIT_COMMITTER_EMAIL": "bench@example.com"}
    if not (folder / ".git").exists():
        subprocess.run(["git", "init", "-q"], cwd=folder, env=env, check=True)
    subprocess.run(["git", "add", "-A"], cwd=folder, env=env, check=True)
    subprocess.run(["git", "commit", "-qm", "linear world", "--allow-empty"], cwd=folder, env=env, check=True)
    started = time.perf_counter()
    done = subprocess.run(["dvc", "repro"], cwd=folder, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"dvc repro failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    print(f"dvc repro: {(time.perf_counter() - started) / 60:.1f} min (seeds {list(seeds)}, scale {scale}, "
          f"overrides {list(set_ or [])})\n")
    for name in ("graph.md", "table1_retrieval.md", "table4_zeroshot3d.md"):
        print((folder / "results" / name).read_text(), "\n")
    if not keep:
        shutil.rmtree(folder)


if __name__ == "__main__":
    app()
