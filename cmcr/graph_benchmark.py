"""The MCR graph's benchmark family (``benchmarks.graph``): every pair of modalities of a unified space.

Tasks (:data:`cmcr.benchmarks.GRAPH_TASKS`): ``audio_points`` (audio↔3D retrieval — emergent: no link ever
trains audio with 3D), ``audio_text`` (AudioCaps/Clotho-style retrieval), ``audio_image`` (Table 1's
protocol) and ``points_text`` (Table 4's zero-shot 3D classification), plus retrieval tasks params declare for
modalities of spaces of your own (``graph_tasks``, :func:`cmcr.benchmarks.graph_tasks`). A retrieval task scores both
directions with Table 1's metrics (mAP, R@1, R@5) and has an exact ceiling (:mod:`cmcr.metrics.ceiling`: the
best mAP reachable when items of one class — the attributes both modalities show — cannot be told apart)
and an analytic chance level; zero-shot has 100 % and 1/k·j.

A *model* is ``{space: embed}``: it can score a task when it embeds both sets' spaces. For a graph, a
modality is embedded by the space :meth:`cmcr.graph.Graph.modalities` assigns (e.g. text by CLIP, the base or
first space), so a task whose set comes from another space is skipped with its reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cmcr.benchmarks import GRAPH_TASKS, set_name
from cmcr.metrics.retrieval import match_ranks, random_expectation, retrieval_metrics
from cmcr.metrics.zeroshot import class_embeddings, topk_accuracy

Embed = Callable[..., torch.Tensor]  # embed(x, modality=None): L2-normalised rows in the compared space
#: one-letter names of the modalities in direction labels (A2P: audio → points)
LETTER = {"audio": "A", "points": "P", "text": "T", "image": "I"}
#: the single connection that can score a task alone (its main variant), as the paper's tables use them
SINGLE_CONNECTION_VARIANTS = {"clip_clap": "K", "clip_ulip": "clip_ulip"}


@dataclass
class TaskData:
    """Two loaded sets of one task on one dataset: ``query``/``gallery`` (key, space, tensor, table)."""

    task: str
    kind: str
    sets: Mapping[str, tuple[str, torch.Tensor, pd.DataFrame]]  # key → (space, embeddings, table)
    classes: tuple[str, ...]

    @property
    def keys(self) -> tuple[str, str]:
        return tuple(self.sets)  # (query key, gallery key)

    def directions(self) -> tuple[str, str]:
        return task_directions(*self.keys)


def task_directions(first: str, second: str) -> tuple[str, str]:
    """A retrieval task's two direction labels: ``A2P`` / ``P2A`` (a modality of your own by its name: ``touch2I``)."""
    a, b = (LETTER.get(k, k) for k in (first, second))
    return f"{a}2{b}", f"{b}2{a}"


def load_task(embeddings: str | Path, task: str, dataset: str, spec: tuple | None = None
              ) -> tuple[TaskData, dict[str, int] | None]:
    """The two sets of ``task`` on ``dataset`` (``<embeddings>/<space>/<set>@<dataset>``); retrieval pairs
    joined by ``pair_id`` (coverage returned). ArtifactError (from the loader) naming a missing set. ``spec``:
    the task's definition when it is not built in (:func:`cmcr.benchmarks.graph_tasks`)."""
    from cmcr.artifacts import load_embedding_set
    from cmcr.evaluation import join_pairs

    from cmcr.evaluation import class_columns

    kind, first, second, classes = spec if spec is not None else GRAPH_TASKS[task]
    loaded = {}
    for key, space, name in (first, second):
        if kind == "zeroshot":
            columns = ["label"] if name == "prompts" else ["concept"]
        else:
            columns = ["pair_id"]
            if key == first[0]:  # the class columns the query set has (a user's set may have none)
                present = class_columns(Path(embeddings) / space / f"{set_name(name, dataset)}.parquet")
                classes = tuple(c for c in classes if c in present)
        matrix, table = load_embedding_set(Path(embeddings) / space, set_name(name, dataset), columns=columns)
        loaded[key] = (space, torch.from_numpy(np.array(matrix, dtype=np.float32)), table)
    coverage = None
    if kind == "retrieval":
        (ka, (sa, xa, ta)), (kb, (sb, xb, tb)) = loaded.items()
        xa, ta, xb, tb, coverage = join_pairs(xa, ta, xb, tb, "pair_id", f"{dataset} {task}")
        loaded = {ka: (sa, xa, ta), kb: (sb, xb, tb)}
    return TaskData(task, kind, loaded, tuple(classes)), coverage


def task_ceiling(data: TaskData) -> dict[str, Any]:
    """The exact best scores of the task (retrieval: :func:`cmcr.metrics.ceiling.retrieval_ceiling` over the
    classes both modalities show — every pair its own class when the set has no class columns; zero-shot: 100 %)."""
    from cmcr.metrics.ceiling import retrieval_ceiling

    if data.kind == "zeroshot":
        return {f"top{j}": 100.0 for j in (1, 3, 5)}
    table = data.sets[data.keys[0]][2]
    classes = (list(table[list(data.classes)].itertuples(index=False, name=None)) if data.classes
               else list(range(len(table))))
    best = retrieval_ceiling(classes)
    forward, backward = data.directions()
    return {forward: best, backward: dict(best)}


def task_random(data: TaskData) -> dict[str, Any]:
    """Chance level: analytic expectation of a random ranking / a random class."""
    if data.kind == "zeroshot":
        k = int(data.sets["text"][2]["label"].max()) + 1
        return {f"top{j}": 100 * min(j, k) / k for j in (1, 3, 5)}
    n = data.sets[data.keys[0]][1].shape[0]
    forward, backward = data.directions()
    return {forward: random_expectation(n), backward: random_expectation(n)}


def unusable(data: TaskData, model: Mapping[str, Embed], modality_spaces: Mapping[str, str] | None = None) -> str | None:
    """Why ``model`` cannot score ``data`` (None when it can): a space it does not embed, (a graph) a modality it
    embeds from another space than the set's, or outputs of different widths (the no-connection baseline over
    spaces of different widths)."""
    for modality, (space, _, _) in data.sets.items():  # a set's key is its modality
        if space not in model:
            return f"embeds no {space} ({modality})"
        if modality_spaces is not None and modality_spaces.get(modality) != space:
            return f"embeds {modality} from {modality_spaces.get(modality)}, the set is {space}'s"
    with torch.no_grad():  # e.g. the no-connection baseline over spaces of different widths: nothing to compare
        widths = {space: int(model[space](x[:2], modality=key).shape[1]) for key, (space, x, _) in data.sets.items()}
    if len(set(widths.values())) > 1:
        return f"embeds to different widths {widths}"
    return None


def evaluate_task(data: TaskData, model: Mapping[str, Embed], name: str) -> tuple[dict[str, Any], pd.DataFrame]:
    """Scores and per-item results of one model on one task (both retrieval directions; zero-shot top-k). Each
    embed function is called with the set's modality (``embed(x, modality=…)``: a centred closed-form map needs it)."""
    (ka, (sa, xa, ta)), (kb, (sb, xb, tb)) = data.sets.items()
    with torch.no_grad():
        a, b = model[sa](xa, modality=ka), model[sb](xb, modality=kb)  # a set's key is its modality
        if a.shape[1] != b.shape[1]:
            raise ValueError(f"{name}: {sa} and {sb} embed to widths {a.shape[1]} and {b.shape[1]}")
        if data.kind == "zeroshot":
            labels = torch.tensor(tb["label"].to_numpy())
            classes = class_embeddings(b, labels, int(labels.max()) + 1)
            truth = torch.tensor(ta["concept"].to_numpy())
            metrics = topk_accuracy(a, classes, truth)
            sims = torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(classes, dim=-1).T
            rank = (sims >= sims.gather(1, truth.view(-1, 1))).sum(1)  # the true class's rank, as topk_accuracy
            return metrics, pd.DataFrame({"variant": name, "task": data.task, "direction": "P2T",
                                          "query": range(len(a)), "rank": rank.numpy()})
        forward, backward = data.directions()
        metrics = {forward: retrieval_metrics(a, b), backward: retrieval_metrics(b, a)}
        items = pd.concat([pd.DataFrame({"variant": name, "task": data.task, "direction": d, "query": range(len(q)),
                                         "rank": match_ranks(q, g).numpy()})
                           for d, (q, g) in {forward: (a, b), backward: (b, a)}.items()], ignore_index=True)
    return metrics, items
