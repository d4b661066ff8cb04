"""Stage `evaluate`: the paper's four benchmarks — every trained variant, the no-connection baseline, the closed-form
rows and chance — in one process (the variants' checkpoints are loaded once and shared by the benchmarks of their link).

retrieval      — audio↔image (AVE / Flickr-SoundNet protocol), CLIP–CLAP variants (Tables 1, 5);
localization   — best proposal vs the sounding object's box, cIoU / AUC (Table 2; VGGSS, MUSIC);
counterfactual — the same scenes plus negatives, AP / Max-F1 per Eq. 11 (Table 3; Ex-VGGSS, Ex-FlickrNet);
zeroshot3d     — ModelNet40-style zero-shot 3D classification, CLIP–ULIP variants (Table 4).
Reads the plans ``data/params/evaluate/<benchmark>.json`` (the link, datasets, metric options, the variants and
seeds each scores: :func:`cmcr.plan.evaluation_plan`), not params.yaml. Every row goes through the one driver,
:func:`cmcr.evaluation.score_rows`. Writes ``metrics/<benchmark>.json`` (git-tracked, for `dvc metrics diff`) and
per-item results ``data/eval/<benchmark>_items.parquet``.
"""

from common import CONNECTIONS, EMBEDDINGS, METRICS, ROOT, run, setup_logging

import logging

import pandas as pd

from cmcr import layout
from cmcr.artifacts import ArtifactError, write_json, write_parquet
from cmcr.benchmarks import BENCHMARKS
from cmcr.config import Connection
from cmcr.evaluation import Row, benchmark_modalities, ceiling, load_benchmark, no_connection, random_baseline, score_rows
from cmcr.graph import GraphResult, closed_form_connection, load_unit
from cmcr.layout import checkpoint_path
from cmcr.plan import read_plan


def evaluate_benchmark(benchmark: str, plan: dict, load, log: logging.Logger) -> None:
    """One benchmark: its rows (``load(name, seed)``: a variant's checkpoint, read once for every benchmark) scored
    on each listed dataset; writes its metrics and per-item tables."""
    metrics, items, rows, datasets = {}, [], [], plan["datasets"]
    if plan["link"] is None:  # neither declared nor listed: nothing to score
        log.info("%s: no link %s declared and no dataset listed: nothing to evaluate", benchmark, BENCHMARKS[benchmark])
        datasets = []
    else:
        link = Connection.from_link_dict(plan["link"])
        rows.append(Row("no_connection", None, no_connection(link.spaces)))
        for unit in plan["variants"]:  # an imported official release is one file for every seed: scored once
            for seed in unit["seeds"]:
                projectors = load(unit["name"], seed).projectors
                rows.append(Row(unit["name"], None if unit["once"] else seed, {s: projectors[s].embed for s in link.spaces}))
        try:  # the closed-form rows (no training, deterministic): the second space mapped linearly into the first
            fitted = closed_form_connection(EMBEDDINGS, link)
        except ArtifactError as exc:
            log.warning("%s: closed-form rows skipped: %s", benchmark, exc)
            fitted = {}
        modalities = benchmark_modalities(benchmark)
        for row, result in fitted.items():
            rows.append(Row(row, None, {s: (lambda x, m=m, modality=modalities[s]: m.embed(x, modality))
                                        for s, m in result.projectors.items()}))
    for dataset in datasets:
        try:
            data, coverage = load_benchmark(EMBEDDINGS, benchmark, dataset, plan["options"])
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
        log.info("%s / %s: %s", benchmark, dataset, scores | skipped)
    write_json(METRICS / f"{benchmark}.json", metrics)
    write_parquet(ROOT / layout.EVAL / f"{benchmark}_items.parquet",
                  pd.concat(items, ignore_index=True) if items else pd.DataFrame())


def main() -> None:
    log = setup_logging("evaluate")
    plans = {b: read_plan(ROOT / layout.evaluation_plan(b)) for b in BENCHMARKS}
    loaded: dict[tuple[str, int], GraphResult] = {}

    def load(name: str, seed: int) -> GraphResult:
        if (name, seed) not in loaded:
            loaded[name, seed] = load_unit(checkpoint_path(CONNECTIONS, name, seed))
        return loaded[name, seed]

    for benchmark, plan in plans.items():
        evaluate_benchmark(benchmark, plan, load, log)


if __name__ == "__main__":
    run(main)
