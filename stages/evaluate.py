"""Stage `evaluate@<benchmark>`: every trained variant, the no-connection baseline and chance on one benchmark.

retrieval      — audio↔image (AVE / Flickr-SoundNet protocol), CLIP–CLAP variants (Tables 1, 5);
localization   — best proposal vs the sounding object's box, cIoU / AUC (Table 2; VGGSS, MUSIC);
counterfactual — the same scenes plus negatives, AP / Max-F1 per Eq. 11 (Table 3; Ex-VGGSS, Ex-FlickrNet);
zeroshot3d     — ModelNet40-style zero-shot 3D classification, CLIP–ULIP variants (Table 4).
Writes metrics JSON (git-tracked, for `dvc metrics diff`) and per-item results as Parquet.
"""

import pandas as pd
import torch
import typer

from common import CONNECTIONS, EMBEDDINGS, METRICS, ROOT, params, run, setup_logging
from cmcr.artifacts import ArtifactError, load_embedding_set, write_json, write_parquet
from cmcr.config import CONNECTIONS as KNOWN_CONNECTIONS
from cmcr.evaluation import BENCHMARKS, BenchmarkData, evaluate_model, no_connection, random_baseline
from cmcr.experiments import variant_connection, variant_names
from cmcr.train import load_checkpoint

#: benchmark → {name in BenchmarkData: (space folder, set name, required table columns)}
SETS = {
    "retrieval": {"audio": ("clap", "eval_audio", []), "image": ("clip", "eval_image", [])},
    "localization": {"proposals": ("clip", "scene_proposals", ["scene_id", "x1", "y1", "x2", "y2"]),
                     "audio": ("clap", "scene_audio", ["scene_id", "positive", "width", "height", "gt_boxes"])},
    "zeroshot3d": {"points": ("ulip", "eval_points", ["concept"]), "prompts": ("clip", "prompts", ["label"])},
}
SETS["counterfactual"] = SETS["localization"]


def load(benchmark: str) -> BenchmarkData:
    sets, tables = {}, {}
    for key, (space, name, columns) in SETS[benchmark].items():
        matrix, table = load_embedding_set(EMBEDDINGS / space, name, columns=columns)
        sets[key], tables[key] = torch.from_numpy(matrix[:]), table
    if benchmark == "localization":  # Table 2 uses only the pairs whose sound source is visible
        keep = tables["audio"]["positive"].to_numpy(dtype=bool)
        tables["audio"] = tables["audio"][keep].reset_index(drop=True)
        sets["audio"] = sets["audio"][torch.from_numpy(keep)]
    return BenchmarkData(benchmark, sets, tables)


def main(benchmark: str) -> None:
    log = setup_logging(f"evaluate@{benchmark}")
    p = params()
    if benchmark not in BENCHMARKS:
        raise typer.BadParameter(f"unknown benchmark {benchmark!r}; known: {sorted(BENCHMARKS)}")
    out_items = ROOT / "data" / "eval" / f"{benchmark}_items.parquet"
    try:
        data = load(benchmark)
    except ArtifactError as exc:  # e.g. bring-your-own embeddings without this benchmark's sets
        log.warning("benchmark %s skipped: %s", benchmark, exc)
        write_json(METRICS / f"{benchmark}.json", {"skipped": str(exc)})
        write_parquet(out_items, pd.DataFrame())
        return
    spaces = KNOWN_CONNECTIONS[BENCHMARKS[benchmark]].spaces
    models = {"no_connection": no_connection(spaces)}
    for name in variant_names(p):
        if variant_connection(p, name) == BENCHMARKS[benchmark]:
            projectors = load_checkpoint(CONNECTIONS / f"{name}.pt").projectors
            models[name] = {s: projectors[s].embed for s in spaces}
    metrics, items = {"random": random_baseline(data)}, []
    for name, embed in models.items():
        metrics[name], per_item = evaluate_model(data, embed, name)
        items.append(per_item)
        log.info("%s: %s", name, metrics[name])
    write_json(METRICS / f"{benchmark}.json", metrics)
    write_parquet(out_items, pd.concat(items, ignore_index=True))


if __name__ == "__main__":
    run(main)
