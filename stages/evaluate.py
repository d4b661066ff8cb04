"""Stage `evaluate@<benchmark>`: every trained variant, the no-connection baseline and chance on one benchmark.

retrieval      — audio↔image (AVE / Flickr-SoundNet protocol), CLIP–CLAP variants (Tables 1, 5);
localization   — best proposal vs the sounding object's box, cIoU / AUC (Table 2; VGGSS, MUSIC);
counterfactual — the same scenes plus negatives, AP / Max-F1 per Eq. 11 (Table 3; Ex-VGGSS, Ex-FlickrNet);
zeroshot3d     — ModelNet40-style zero-shot 3D classification, CLIP–ULIP variants (Table 4).
Reads its plan ``data/params/evaluate/<benchmark>.json`` (the link, datasets, metric options, the variants and
seeds it scores: :func:`cmcr.plan.evaluation_plan`), not params.yaml. Every row goes through the one driver,
:func:`cmcr.evaluation.score_rows`. Writes metrics JSON (git-tracked, for `dvc metrics diff`) and per-item results
as Parquet.
"""

from common import CONNECTIONS, EMBEDDINGS, METRICS, ROOT, run, setup_logging

import pandas as pd
import typer

from cmcr import layout
from cmcr.artifacts import ArtifactError, write_json, write_parquet
from cmcr.benchmarks import BENCHMARKS
from cmcr.config import Connection
from cmcr.evaluation import Row, benchmark_modalities, ceiling, load_benchmark, no_connection, random_baseline, score_rows
from cmcr.graph import closed_form_connection, load_unit
from cmcr.layout import checkpoint_path
from cmcr.plan import read_plan


def main(benchmark: str) -> None:
    if benchmark not in BENCHMARKS:
        raise typer.BadParameter(f"unknown benchmark {benchmark!r}; known: {sorted(BENCHMARKS)}")
    log = setup_logging(f"evaluate@{benchmark}")
    plan = read_plan(ROOT / layout.evaluation_plan(benchmark))
    metrics, items = {}, []
    if plan["link"] is None:  # neither declared nor listed: nothing to score
        log.info("no link %s declared and no dataset listed: nothing to evaluate", BENCHMARKS[benchmark])
        plan["datasets"] = []
    else:
        spaces = Connection.from_link_dict(plan["link"]).spaces
        rows = [Row("no_connection", None, no_connection(spaces))]
        for unit in plan["variants"]:  # an imported official release is one file for every seed: scored once
            for seed in unit["seeds"]:
                projectors = load_unit(checkpoint_path(CONNECTIONS, unit["name"], seed)).projectors
                rows.append(Row(unit["name"], None if unit["once"] else seed, {s: projectors[s].embed for s in spaces}))
        try:  # the closed-form rows (no training, deterministic): the second space mapped linearly into the first
            fitted = closed_form_connection(EMBEDDINGS, Connection.from_link_dict(plan["link"]))
        except ArtifactError as exc:
            log.warning("closed-form rows skipped: %s", exc)
            fitted = {}
        modalities = benchmark_modalities(benchmark)
        for row, result in fitted.items():
            rows.append(Row(row, None, {s: (lambda x, m=m, modality=modalities[s]: m.embed(x, modality))
                                        for s, m in result.projectors.items()}))
    for dataset in plan["datasets"]:
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
        log.info("%s: %s", dataset, scores | skipped)
    write_json(METRICS / f"{benchmark}.json", metrics)
    write_parquet(ROOT / layout.EVAL / f"{benchmark}_items.parquet",
                  pd.concat(items, ignore_index=True) if items else pd.DataFrame())


if __name__ == "__main__":
    run(main)
