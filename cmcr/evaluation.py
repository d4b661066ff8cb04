"""Run the paper's benchmarks for a set of models (trained variants, the official release, baselines).

A "model" here is a mapping from space name to an embedding function into the connected space
(``projector.embed``); the *no connection* baseline maps every space by plain L2 normalisation, i.e.
compares the two original spaces directly (meaningful only as a floor: they were never aligned).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from cmcr.benchmarks import BENCHMARKS
from cmcr.metrics.counterfactual import AP_RULES, IOU_RULES, counterfactual_metrics
from cmcr.metrics.localization import localization_metrics, score_scenes
from cmcr.metrics.retrieval import match_ranks, random_expectation, retrieval_metrics
from cmcr.metrics.zeroshot import class_embeddings, topk_accuracy
from cmcr.pairing import pair_rows

Embed = Callable[..., torch.Tensor]  # embed(x[, modality]): L2-normalised rows in the compared space

#: benchmark → the metric options it takes (params ``evaluation.<benchmark>``) and their allowed values
METRIC_OPTIONS = {"counterfactual": {"ap": AP_RULES, "iou_rule": IOU_RULES}}


def metric_options(benchmark: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Checked metric options of one benchmark (``evaluation.<benchmark>`` in params); ``ValueError``
    naming the key, its value and what is allowed."""
    allowed = METRIC_OPTIONS.get(benchmark, {})
    out = {}
    for key, value in (options or {}).items():
        if key not in allowed:
            raise ValueError(f"evaluation.{benchmark}.{key}: unknown option; {benchmark} takes {sorted(allowed) or 'none'}")
        if value not in allowed[key]:
            raise ValueError(f"evaluation.{benchmark}.{key}: {value!r} is not one of {list(allowed[key])}")
        out[key] = value
    return out


def join_pairs(first: torch.Tensor, first_table: pd.DataFrame, second: torch.Tensor, second_table: pd.DataFrame,
               key: str = "pair_id", label: str = "pairs") -> tuple[torch.Tensor, pd.DataFrame, torch.Tensor,
                                                                    pd.DataFrame, dict[str, int]]:
    """Two evaluation sets paired by ``key`` (:func:`cmcr.pairing.pair_rows`): an item that failed to load on
    either side drops its pair. Returns both sets and tables restricted to the pairs, and the coverage
    ``{"scored", "listed"}``."""
    rows_first, rows_second, coverage = pair_rows(first_table, second_table, key, label)
    return (first[rows_first], first_table.iloc[rows_first].reset_index(drop=True), second[rows_second],
            second_table.iloc[rows_second].reset_index(drop=True), coverage)


def benchmark_modalities(benchmark: str) -> dict[str, str]:
    """``{space: modality}`` of a benchmark's sets (retrieval: CLAP audio, CLIP images; zero-shot 3D: ULIP-2 point
    clouds, CLIP texts): what a modality-dependent map (a centred closed form) is told it embeds."""
    from cmcr.benchmarks import BENCHMARK_SETS, set_modality

    return {space: set_modality(name) for _, space, name, _ in BENCHMARK_SETS[benchmark]}


def no_connection(spaces: tuple[str, ...]) -> dict[str, Embed]:
    """The baseline that needs no training: each space's embeddings as they are (normalised)."""
    return {s: (lambda x, modality=None: F.normalize(x.float(), dim=-1)) for s in spaces}


@dataclass
class BenchmarkData:
    """The evaluation sets of one benchmark, already loaded; ``tables[k]`` describes ``sets[k]`` row by row.

    retrieval: ``audio``, ``image`` (pairs row i ↔ row i); localization / counterfactual: ``proposals``
    (table: scene_id, box) and ``audio`` (table: one scene per row, with positive, size, gt_boxes);
    zeroshot3d: ``points`` (table: concept) and ``prompts`` (table: label). ``options`` are the metric's
    keyword arguments (``evaluation.<benchmark>`` in params, e.g. counterfactual ``ap`` / ``iou_rule``).
    """

    benchmark: str
    sets: Mapping[str, torch.Tensor]
    tables: Mapping[str, pd.DataFrame]
    options: Mapping[str, Any] = field(default_factory=dict)


def load_benchmark(embeddings: str | Path, benchmark: str, dataset: str, options: Mapping[str, Any] | None = None
                   ) -> tuple[BenchmarkData, dict[str, int] | None]:
    """The evaluation sets of ``benchmark`` on ``dataset`` from the pipeline's embeddings folder
    (``<embeddings>/<space>/<set>@<dataset>.npy`` + ``.parquet``), and the retrieval pairs' coverage.

    Retrieval pairs are joined by ``pair_id`` (a failed item on either side drops its pair); localization
    (Table 2) keeps only the scenes whose sound source is visible. ArtifactError if a set is missing."""
    from cmcr.artifacts import load_embedding_set
    from cmcr.benchmarks import BENCHMARK_SETS, set_name

    sets, tables = {}, {}
    for key, space, name, columns in BENCHMARK_SETS[benchmark]:
        if benchmark == "retrieval" and key == "audio":  # with its class columns, when the set has them
            columns = columns + class_columns(Path(embeddings) / space / f"{set_name(name, dataset)}.parquet")
        matrix, table = load_embedding_set(Path(embeddings) / space, set_name(name, dataset), columns=columns)
        sets[key], tables[key] = torch.from_numpy(np.array(matrix, dtype=np.float32)), table  # a writable copy
    coverage = None
    if benchmark == "retrieval":
        sets["audio"], tables["audio"], sets["image"], tables["image"], coverage = join_pairs(
            sets["audio"], tables["audio"], sets["image"], tables["image"], "pair_id", f"{dataset} retrieval")
    if benchmark == "localization":
        keep = tables["audio"]["positive"].to_numpy(dtype=bool)
        tables["audio"] = tables["audio"][keep].reset_index(drop=True)
        sets["audio"] = sets["audio"][torch.from_numpy(keep)]
    return BenchmarkData(benchmark, sets, tables, dict(options or {})), coverage


#: columns that, when an evaluation table has them, define the retrieval classes (the demo world: a pair's
#: audio and image share concept, size and condition and nothing else) — see :mod:`cmcr.metrics.ceiling`
CLASS_COLUMNS = ("concept", "size", "condition")


def class_columns(path: Path) -> list[str]:
    """The :data:`CLASS_COLUMNS` a set's Parquet has (read from its schema; none when the file is missing)."""
    import pyarrow.parquet as pq

    if not path.is_file():
        return []  # load_embedding_set names the missing file
    names = pq.read_schema(path).names
    return [c for c in CLASS_COLUMNS if c in names]


def ceiling(data: BenchmarkData) -> dict[str, Any]:
    """The best score the benchmark can show given its own structure (:mod:`cmcr.metrics.ceiling`): exact."""
    from cmcr.metrics.ceiling import counterfactual_ceiling, localization_ceiling, retrieval_ceiling

    t = data.tables
    if data.benchmark == "retrieval":
        columns = [c for c in CLASS_COLUMNS if c in t["audio"].columns]
        classes = (list(t["audio"][columns].itertuples(index=False, name=None)) if columns
                   else list(range(len(t["audio"]))))
        best = retrieval_ceiling(classes)  # the class structure is the same in both directions
        return {"A2I": best, "I2A": dict(best)}
    if data.benchmark == "localization":
        return localization_ceiling(t["proposals"], t["audio"])
    if data.benchmark == "counterfactual":
        return counterfactual_ceiling(t["proposals"], t["audio"], **data.options)
    if data.benchmark == "zeroshot3d":
        return {f"top{j}": 100.0 for j in (1, 3, 5)}
    raise ValueError(f"unknown benchmark {data.benchmark!r}; known: {sorted(BENCHMARKS)}")


def evaluate_model(data: BenchmarkData, embed: Mapping[str, Embed], name: str) -> tuple[dict[str, Any], pd.DataFrame]:
    """Metrics and per-item results of one model on one benchmark; each embed function is told its set's modality
    (``embed(x, modality=…)``: per-modality BatchNorm statistics, a centred closed-form map)."""
    s, t = data.sets, data.tables
    with torch.no_grad():
        if data.benchmark == "retrieval":
            a, i = embed["clap"](s["audio"], modality="audio"), embed["clip"](s["image"], modality="image")
            metrics = {"A2I": retrieval_metrics(a, i), "I2A": retrieval_metrics(i, a)}
            items = pd.concat([pd.DataFrame({"variant": name, "direction": d, "query": range(len(q)),
                                             "rank": match_ranks(q, g).numpy()})
                               for d, (q, g) in {"A2I": (a, i), "I2A": (i, a)}.items()], ignore_index=True)
        elif data.benchmark in ("localization", "counterfactual"):
            scored = score_scenes(embed["clip"](s["proposals"], modality="image"), t["proposals"],
                                  embed["clap"](s["audio"], modality="audio"), t["audio"])
            metrics = (localization_metrics(scored["iou"]) if data.benchmark == "localization"
                       else counterfactual_metrics(scored["confidence"], scored["iou"], scored["positive"],
                                                   **data.options))
            items = scored.assign(variant=name)
        elif data.benchmark == "zeroshot3d":
            labels = torch.tensor(t["prompts"]["label"].to_numpy())
            classes = class_embeddings(embed["clip"](s["prompts"], modality="text"), labels, int(labels.max()) + 1)
            x = embed["ulip"](s["points"], modality="points")
            truth = torch.tensor(t["points"]["concept"].to_numpy())
            metrics = topk_accuracy(x, classes, truth)
            items = pd.DataFrame({"variant": name, "item": range(len(x)), "label": truth.numpy(),
                                  "predicted": (x @ classes.T).argmax(1).numpy()})
        else:
            raise ValueError(f"unknown benchmark {data.benchmark!r}; known: {sorted(BENCHMARKS)}")
    return metrics, items


def random_baseline(data: BenchmarkData, seed: int = 0) -> dict[str, Any]:
    """Chance level: analytic for retrieval and classification, random embeddings for the scene tasks."""
    if data.benchmark == "retrieval":
        n = data.sets["audio"].shape[0]
        return {"A2I": random_expectation(n), "I2A": random_expectation(n)}
    if data.benchmark == "zeroshot3d":
        k = int(data.tables["prompts"]["label"].max()) + 1
        return {f"top{j}": 100 * min(j, k) / k for j in (1, 3, 5)}
    g = torch.Generator().manual_seed(seed)
    rand = {"proposals": torch.randn(data.sets["proposals"].shape[0], 8, generator=g),
            "audio": torch.randn(data.sets["audio"].shape[0], 8, generator=g)}
    metrics, _ = evaluate_model(BenchmarkData(data.benchmark, rand, data.tables, data.options), no_connection(("clip", "clap")), "random")
    return metrics
