"""Stage `evaluate@<benchmark>`: every trained variant, the no-connection baseline and chance on one benchmark.

retrieval      — audio↔image (AVE / Flickr-SoundNet protocol), CLIP–CLAP variants (Tables 1, 5);
localization   — best proposal vs the sounding object's box, cIoU / AUC (Table 2; VGGSS, MUSIC);
counterfactual — the same scenes plus negatives, AP / Max-F1 per Eq. 11 (Table 3; Ex-VGGSS, Ex-FlickrNet);
zeroshot3d     — ModelNet40-style zero-shot 3D classification, CLIP–ULIP variants (Table 4).
Writes metrics JSON (git-tracked, for `dvc metrics diff`) and per-item results as Parquet.
"""

from common import CONNECTIONS, EMBEDDINGS, METRICS, ROOT, params, run, setup_logging

import pandas as pd
import typer

from cmcr import layout
from cmcr.artifacts import ArtifactError, write_json, write_parquet
from cmcr.config import connection_of
from cmcr.benchmarks import BENCHMARKS
from cmcr.evaluation import (Row, benchmark_modalities, ceiling, load_benchmark, metric_options, no_connection,
                             random_baseline, score_rows)
from cmcr.graph import closed_form_connection
from cmcr.experiments import checkpoint_path, seeds_of, variant_connection, variant_names
from cmcr.train import load_checkpoint

def main(benchmark: str) -> None:
    log = setup_logging(f"evaluate@{benchmark}")
    p = params()
    if benchmark not in BENCHMARKS:
        raise typer.BadParameter(f"unknown benchmark {benchmark!r}; known: {sorted(BENCHMARKS)}")
    link = connection_of(p, BENCHMARKS[benchmark])  # the link the benchmark evaluates, as params declare it
    spaces = link.spaces
    seeds = seeds_of(p)
    trained = [name for name in variant_names(p) if variant_connection(p, name) == BENCHMARKS[benchmark]]
    rows = [Row("no_connection", None, no_connection(spaces))]
    for name in trained:
        # an imported official release is the same file for every seed: scored once, as a single run
        official = bool((p["variants"][name] or {}).get("official"))
        for seed in seeds[:1] if official else seeds:
            projectors = load_checkpoint(checkpoint_path(CONNECTIONS, name, seed)).projectors
            rows.append(Row(name, None if official else seed, {s: projectors[s].embed for s in spaces}))
    try:  # the closed-form rows (no training, deterministic): the second space mapped linearly into the first
        fitted = closed_form_connection(EMBEDDINGS, link)
    except ArtifactError as exc:
        log.warning("closed-form rows skipped: %s", exc)
        fitted = {}
    modalities = benchmark_modalities(benchmark)
    for row, result in fitted.items():
        rows.append(Row(row, None, {s: (lambda x, m=m, modality=modalities[s]: m.embed(x, modality))
                                    for s, m in result.projectors.items()}))
    options = metric_options(benchmark, p["evaluation"].get(benchmark))
    metrics, items = {}, []
    for dataset in p["benchmarks"][benchmark] or []:
        try:
            data, coverage = load_benchmark(EMBEDDINGS, benchmark, str(dataset), options)
        except ArtifactError as exc:  # e.g. bring-your-own embeddings without this dataset's sets
            log.warning("%s on %s skipped: %s", benchmark, dataset, exc)
            metrics[dataset] = {"skipped": str(exc)}
            continue
        if coverage and coverage["scored"] < coverage["listed"]:
            log.warning("%s: %d of %d pairs scored (the others lost an item to a load failure)", dataset,
                        coverage["scored"], coverage["listed"])
        widths = {key: int(s.x.shape[1]) for key, s in data.sets.items()}
        different = len(set(widths.values())) > 1  # the original spaces: nothing to compare directly
        scores, skipped, scored_items = score_rows(
            rows, data, {"dataset": dataset},
            lambda row: f"the original spaces have different widths {widths}" if row.name == "no_connection" and different
            else None)
        metrics[dataset] = ({"random": random_baseline(data), "ceiling": ceiling(data)}
                            | ({"pairs": coverage} if coverage else {}) | scores
                            | {name: {"skipped": reason} for name, reason in skipped.items()})
        items += scored_items
        log.info("%s: %s", dataset, scores | skipped)
    write_json(METRICS / f"{benchmark}.json", metrics)
    write_parquet(ROOT / layout.EVAL / f"{benchmark}_items.parquet",
                  pd.concat(items, ignore_index=True) if items else pd.DataFrame())


if __name__ == "__main__":
    run(main)
