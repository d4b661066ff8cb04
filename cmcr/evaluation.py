"""Evaluation: one task type, one driver, for every family — the paper's four benchmarks and the MCR graph's tasks.

A *model* is a mapping from space name to an embedding function into the compared space (``projector.embed``, a
graph's embedders); the *no connection* baseline maps every space by plain L2 normalisation, i.e. compares the
original spaces directly (meaningful only as a floor: they were never aligned).

- :class:`TaskData`: one task on one dataset, loaded — a benchmark (:func:`load_benchmark`: ``retrieval``
  audio↔image, ``localization`` / ``counterfactual`` scenes, ``zeroshot3d``) or a graph task (:func:`load_task`:
  ``audio_points`` — emergent: no link ever trains audio with 3D —, ``audio_text``, ``audio_image``, ``points_text``
  and the retrieval tasks params declare, :func:`cmcr.benchmarks.graph_tasks`). Its ``kind`` picks the metric:
  ``retrieval`` (both directions, Table 1's mAP / R@1 / R@5), ``zeroshot`` (top-k), ``localization`` (cIoU / AUC),
  ``counterfactual`` (AP / Max-F1, Eq. 11).
- :func:`score_model`, :func:`ceiling` (exact, :mod:`cmcr.metrics.ceiling`), :func:`random_baseline` (chance) —
  each for every kind.
- :func:`score_rows`: the driver — rows (units × seeds, baselines, closed forms) on one loaded task, the seeds of a
  row summarised as mean ± std.

For a graph, a modality is embedded by the space :meth:`cmcr.graph.Graph.modalities` assigns (e.g. text by CLIP,
the base or first space), so a task whose set comes from another space is skipped with its reason (:func:`unusable`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from cmcr.artifacts import load_embedding_set
from cmcr.benchmarks import BENCHMARK_SETS, GRAPH_TASKS, set_modality, set_name
from cmcr.metrics.ceiling import counterfactual_ceiling, localization_ceiling, retrieval_ceiling
from cmcr.metrics.counterfactual import AP_RULES, IOU_RULES, counterfactual_metrics
from cmcr.metrics.localization import localization_metrics, score_scenes
from cmcr.metrics.retrieval import match_ranks, random_expectation, retrieval_metrics
from cmcr.metrics.seeds import summarize_seeds
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
    return {space: set_modality(name) for _, space, name, _ in BENCHMARK_SETS[benchmark]}


def no_connection(spaces: tuple[str, ...]) -> dict[str, Embed]:
    """The baseline that needs no training: each space's embeddings as they are (normalised)."""
    return {s: (lambda x, modality=None: F.normalize(x.float(), dim=-1)) for s in spaces}


#: one-letter names of the modalities in direction labels (A2P: audio → points)
LETTER = {"audio": "A", "points": "P", "text": "T", "image": "I"}
#: the single connection that can score a graph task alone (its main variant), as the paper's tables use them
SINGLE_CONNECTION_VARIANTS = {"clip_clap": "K", "clip_ulip": "clip_ulip"}
#: a benchmark's kind of metric
BENCHMARK_KIND = {"retrieval": "retrieval", "localization": "localization", "counterfactual": "counterfactual",
                  "zeroshot3d": "zeroshot"}


@dataclass(frozen=True)
class EvalSet:
    """One loaded evaluation set: the space that embedded it, its modality, its rows and their table."""

    space: str
    modality: str
    x: torch.Tensor
    table: pd.DataFrame


@dataclass
class TaskData:
    """One task on one dataset, loaded: ``sets`` by key (retrieval: query then gallery, rows paired i ↔ i; zeroshot:
    the items (table: concept) then the class prompts (table: label); localization / counterfactual: ``proposals``
    (table: scene_id, box) and ``audio`` (one scene per row, with positive, size, gt_boxes)). ``classes``: the query
    table's columns the exact retrieval ceiling groups by (none: every pair its own class); ``options``: the metric's
    keyword arguments (``evaluation.<benchmark>`` in params, e.g. counterfactual ``ap`` / ``iou_rule``)."""

    task: str
    kind: str
    sets: Mapping[str, EvalSet]
    classes: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)

    def directions(self) -> tuple[str, str]:
        """A retrieval task's two direction labels: ``A2I`` / ``I2A`` (a modality of your own by its name: ``touch2I``)."""
        a, b = (LETTER.get(k, k) for k in self.sets)
        return f"{a}2{b}", f"{b}2{a}"


def _load_set(embeddings: str | Path, space: str, name: str, dataset: str, columns: list[str], modality: str) -> EvalSet:
    matrix, table = load_embedding_set(Path(embeddings) / space, set_name(name, dataset), columns=columns)
    return EvalSet(space, modality, torch.from_numpy(np.array(matrix, dtype=np.float32)), table)  # a writable copy


def _paired(data: TaskData, dataset: str) -> tuple[TaskData, dict[str, int]]:
    """A retrieval task's two sets joined by ``pair_id`` (:func:`join_pairs`) and the coverage."""
    (ka, a), (kb, b) = data.sets.items()
    xa, ta, xb, tb, coverage = join_pairs(a.x, a.table, b.x, b.table, "pair_id", f"{dataset} {data.task}")
    sets = {ka: EvalSet(a.space, a.modality, xa, ta), kb: EvalSet(b.space, b.modality, xb, tb)}
    return dataclasses.replace(data, sets=sets), coverage


def load_benchmark(embeddings: str | Path, benchmark: str, dataset: str, options: Mapping[str, Any] | None = None
                   ) -> tuple[TaskData, dict[str, int] | None]:
    """The evaluation sets of ``benchmark`` on ``dataset`` from the pipeline's embeddings folder
    (``<embeddings>/<space>/<set>@<dataset>.npy`` + ``.parquet``), and the retrieval pairs' coverage.

    Retrieval pairs are joined by ``pair_id`` (a failed item on either side drops its pair) and grouped by the
    :data:`CLASS_COLUMNS` the audio set has; localization (Table 2) keeps only the scenes whose sound source is
    visible. ArtifactError if a set is missing."""
    sets, classes = {}, ()
    for key, space, name, columns in BENCHMARK_SETS[benchmark]:
        if benchmark == "retrieval" and key == "audio":  # with its class columns, when the set has them
            classes = tuple(class_columns(Path(embeddings) / space / f"{set_name(name, dataset)}.parquet"))
            columns = columns + list(classes)
        sets[key] = _load_set(embeddings, space, name, dataset, columns, set_modality(name))
    data = TaskData(benchmark, BENCHMARK_KIND[benchmark], sets, classes, dict(options or {}))
    if benchmark == "retrieval":
        return _paired(data, dataset)
    if benchmark == "localization":
        audio = sets["audio"]
        keep = audio.table["positive"].to_numpy(dtype=bool)
        sets["audio"] = EvalSet(audio.space, audio.modality, audio.x[torch.tensor(keep)],
                                audio.table[keep].reset_index(drop=True))
    return data, None


def load_task(embeddings: str | Path, task: str, dataset: str, spec: tuple | None = None
              ) -> tuple[TaskData, dict[str, int] | None]:
    """The two sets of graph task ``task`` on ``dataset`` (``<embeddings>/<space>/<set>@<dataset>``, keyed by their
    modality); retrieval pairs joined by ``pair_id`` (coverage returned). ArtifactError (from the loader) naming a
    missing set. ``spec``: the task's definition when it is not built in (:func:`cmcr.benchmarks.graph_tasks`)."""
    kind, first, second, classes = spec if spec is not None else GRAPH_TASKS[task]
    sets = {}
    for key, space, name in (first, second):
        if kind == "zeroshot":
            columns = ["label"] if name == "prompts" else ["concept"]
        else:
            columns = ["pair_id"]
            if key == first[0]:  # the class columns the query set has (a user's set may have none)
                present = class_columns(Path(embeddings) / space / f"{set_name(name, dataset)}.parquet")
                classes = tuple(c for c in classes if c in present)
        sets[key] = _load_set(embeddings, space, name, dataset, columns, key)  # a graph set's key is its modality
    data = TaskData(task, kind, sets, tuple(classes))
    return _paired(data, dataset) if kind == "retrieval" else (data, None)


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


def ceiling(data: TaskData) -> dict[str, Any]:
    """The best score the task can show given its own structure (:mod:`cmcr.metrics.ceiling`): exact. Retrieval:
    the classes both modalities show (every pair its own class when the set has no class columns); zero-shot 100 %."""
    if data.kind == "retrieval":
        table = next(iter(data.sets.values())).table
        classes = (list(table[list(data.classes)].itertuples(index=False, name=None)) if data.classes
                   else list(range(len(table))))
        best = retrieval_ceiling(classes)  # the class structure is the same in both directions
        forward, backward = data.directions()
        return {forward: best, backward: dict(best)}
    if data.kind == "zeroshot":
        return {f"top{j}": 100.0 for j in (1, 3, 5)}
    if data.kind == "localization":
        return localization_ceiling(data.sets["proposals"].table, data.sets["audio"].table)
    if data.kind == "counterfactual":
        return counterfactual_ceiling(data.sets["proposals"].table, data.sets["audio"].table, **data.options)
    raise ValueError(f"unknown task kind {data.kind!r} ({data.task})")


def score_model(data: TaskData, embed: Mapping[str, Embed], name: str) -> tuple[dict[str, Any], pd.DataFrame]:
    """Metrics and per-item results of one model on one task; each embed function is told its set's modality
    (``embed(x, modality=…)``: per-modality BatchNorm statistics, a centred closed-form map). Retrieval: both
    directions, each query's rank of its pair; zero-shot: top-k and each item's rank of its true class."""
    with torch.no_grad():
        out = {k: embed[v.space](v.x, modality=v.modality) for k, v in data.sets.items()}
        if data.kind in ("retrieval", "zeroshot"):
            (ka, a), (kb, b) = out.items()
            if a.shape[1] != b.shape[1]:
                raise ValueError(f"{name}: {data.sets[ka].space} and {data.sets[kb].space} embed to widths "
                                 f"{a.shape[1]} and {b.shape[1]}")
        if data.kind == "retrieval":
            forward, backward = data.directions()
            metrics = {forward: retrieval_metrics(a, b), backward: retrieval_metrics(b, a)}
            items = pd.concat([pd.DataFrame({"variant": name, "task": data.task, "direction": d,
                                             "query": range(len(q)), "rank": match_ranks(q, g).numpy()})
                               for d, (q, g) in {forward: (a, b), backward: (b, a)}.items()], ignore_index=True)
        elif data.kind == "zeroshot":
            labels = torch.tensor(data.sets[kb].table["label"].to_numpy())
            classes = class_embeddings(b, labels, int(labels.max()) + 1)
            truth = torch.tensor(data.sets[ka].table["concept"].to_numpy())
            metrics = topk_accuracy(a, classes, truth)
            sims = F.normalize(a, dim=-1) @ F.normalize(classes, dim=-1).T
            rank = (sims >= sims.gather(1, truth.view(-1, 1))).sum(1)  # the true class's rank, as topk_accuracy
            direction = "2".join(LETTER.get(s.modality, s.modality) for s in data.sets.values())  # P2T
            items = pd.DataFrame({"variant": name, "task": data.task, "direction": direction, "query": range(len(a)),
                                  "rank": rank.numpy()})
        elif data.kind in ("localization", "counterfactual"):
            scored = score_scenes(out["proposals"], data.sets["proposals"].table, out["audio"], data.sets["audio"].table)
            metrics = (localization_metrics(scored["iou"]) if data.kind == "localization"
                       else counterfactual_metrics(scored["confidence"], scored["iou"], scored["positive"],
                                                   **data.options))
            items = scored.assign(variant=name)
        else:
            raise ValueError(f"unknown task kind {data.kind!r} ({data.task})")
    return metrics, items


def random_baseline(data: TaskData, seed: int = 0) -> dict[str, Any]:
    """Chance level: analytic for retrieval (a random ranking) and classification (a random class), random
    embeddings for the scene tasks."""
    if data.kind == "retrieval":
        n = next(iter(data.sets.values())).x.shape[0]
        forward, backward = data.directions()
        return {forward: random_expectation(n), backward: random_expectation(n)}
    if data.kind == "zeroshot":
        k = int(list(data.sets.values())[1].table["label"].max()) + 1
        return {f"top{j}": 100 * min(j, k) / k for j in (1, 3, 5)}
    g = torch.Generator().manual_seed(seed)
    rand = {key: dataclasses.replace(data.sets[key], x=torch.randn(data.sets[key].x.shape[0], 8, generator=g))
            for key in ("proposals", "audio")}
    metrics, _ = score_model(dataclasses.replace(data, sets=rand), no_connection(("clip", "clap")), "random")
    return metrics


def unusable(data: TaskData, model: Mapping[str, Embed], modality_spaces: Mapping[str, str] | None = None) -> str | None:
    """Why ``model`` cannot score ``data`` (None when it can): a space it does not embed, (a graph) a modality it
    embeds from another space than the set's, or outputs of different widths (the no-connection baseline over
    spaces of different widths)."""
    for key, s in data.sets.items():
        if s.space not in model:
            return f"embeds no {s.space} ({key})"
        if modality_spaces is not None and modality_spaces.get(s.modality) != s.space:
            return f"embeds {s.modality} from {modality_spaces.get(s.modality)}, the set is {s.space}'s"
    with torch.no_grad():  # e.g. the no-connection baseline over spaces of different widths: nothing to compare
        widths = {s.space: int(model[s.space](s.x[:2], modality=s.modality).shape[1]) for s in data.sets.values()}
    if len(set(widths.values())) > 1:
        return f"embeds to different widths {widths}"
    return None


@dataclass(frozen=True)
class Row:
    """One row of an evaluation table: a model (``{space: embed}``) under its name, trained from ``seed`` (None: a
    row scored once — the no-connection baseline, a closed form, an imported release). ``modality_spaces``: which
    space embeds each modality (a graph's :meth:`cmcr.graph.Graph.modalities`; None: the set's own space)."""

    name: str
    seed: int | None
    embed: Mapping[str, Embed]
    modality_spaces: Mapping[str, str] | None = None


def score_rows(rows: list[Row], data: TaskData, columns: Mapping[str, Any],
               skip: Callable[[Row], str | None] | None = None
               ) -> tuple[dict[str, Any], dict[str, str], list[pd.DataFrame]]:
    """The one evaluation driver, for every family (the paper's four benchmarks and the graph's tasks): each row
    scored on one loaded task (:func:`score_model`) unless ``skip(row)`` (the caller's rule) or :func:`unusable`
    names why it cannot be; the runs of one name over seeds become one entry, mean ± std and every seed
    (:func:`cmcr.metrics.seeds.summarize_seeds`). Returns ``({name: scores}, {name: reason skipped}, [per-item
    tables with ``columns`` (e.g. the dataset) and the seed, -1 for a row scored once])``."""
    scores: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    items: list[pd.DataFrame] = []
    per_seed: dict[str, dict[str, dict]] = {}
    for row in rows:
        reason = (skip(row) if skip else None) or unusable(data, row.embed, row.modality_spaces)
        if reason:
            skipped[row.name] = reason
            continue
        metrics, per_item = score_model(data, row.embed, row.name)
        items.append(per_item.assign(**columns, seed=-1 if row.seed is None else row.seed))
        if row.seed is None:
            scores[row.name] = metrics
        else:
            per_seed.setdefault(row.name, {})[str(row.seed)] = metrics
    for name, by_seed in per_seed.items():
        scores[name] = summarize_seeds(by_seed)
    return scores, skipped, items
