"""The paper's benchmarks: which connection each evaluates, which embedding sets (space, set name,
modality, required table columns) each needs, and how a dataset's sets are named on disk.

Evaluation itself is :mod:`cmcr.evaluation`; extraction reads these definitions to know what to embed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

BENCHMARKS = {"retrieval": "clip_clap", "localization": "clip_clap", "counterfactual": "clip_clap",
              "zeroshot3d": "clip_ulip"}
#: benchmark → its evaluation sets: (key in BenchmarkData, space, set name, required table columns).
#: On disk a set of dataset D is ``<space>/<set>@<D>`` (e.g. ``clap/eval_audio@AVE``).
BENCHMARK_SETS = {
    "retrieval": [("audio", "clap", "eval_audio", ["pair_id"]), ("image", "clip", "eval_image", ["pair_id"])],
    "localization": [("proposals", "clip", "scene_proposals", ["scene_id", "x1", "y1", "x2", "y2"]),
                     ("audio", "clap", "scene_audio", ["scene_id", "positive", "width", "height", "gt_boxes"])],
    "zeroshot3d": [("points", "ulip", "eval_points", ["concept"]), ("prompts", "clip", "prompts", ["label"])],
}
BENCHMARK_SETS["counterfactual"] = BENCHMARK_SETS["localization"]
#: connection → the true-pair sets its paired-data reference trains on (variants with ``paired: <dataset>``):
#: (space, set name, modality); on disk ``<space>/<set>@<dataset>``, rows joined by ``pair_id``
PAIRED_SETS = {"clip_clap": [("clip", "paired_image", "image"), ("clap", "paired_audio", "audio")],
               "clip_ulip": [("clip", "paired_text", "text"), ("ulip", "paired_points", "points")]}
#: The MCR graph's benchmark family (``benchmarks.graph``): every pair of modalities of a unified space, the
#: emergent ones included. task → (kind, query (key, space, set), gallery (key, space, set), class columns of
#: the exact ceiling). A sound and a point cloud share only the concept (a shape shows neither size nor
#: condition); audio–text and audio–image pairs share concept, size and condition.
GRAPH_TASKS = {
    "audio_points": ("retrieval", ("audio", "clap", "graph_audio"), ("points", "ulip", "graph_points"), ("concept",)),
    "audio_text": ("retrieval", ("audio", "clap", "graph_audio"), ("text", "clip", "graph_text"),
                   ("concept", "size", "condition")),
    "audio_image": ("retrieval", ("audio", "clap", "eval_audio"), ("image", "clip", "eval_image"),
                    ("concept", "size", "condition")),
    "points_text": ("zeroshot", ("points", "ulip", "eval_points"), ("text", "clip", "prompts"), ("concept",)),
}
#: the sets the graph family reads (extraction embeds them; each task pairs two of them): (set, space, set, columns)
BENCHMARK_SETS["graph"] = [(name, space, name, ["label"] if name == "prompts" else ["concept"] if name == "eval_points" else ["pair_id"])
                           for name, space in {name: space for task in GRAPH_TASKS.values() for _, space, name in task[1:3]}.items()]
#: the modality of each evaluation (or paired-reference) set (what its space's loader is asked to load)
EVAL_SET_MODALITY = {"eval_audio": "audio", "eval_image": "image", "scene_proposals": "image",
                     "scene_audio": "audio", "eval_points": "points", "prompts": "text", "graph_audio": "audio",
                     "graph_points": "points", "graph_text": "text"} | {
    name: modality for sets in PAIRED_SETS.values() for _, name, modality in sets}


def set_name(name: str, dataset: str) -> str:
    """File name (without extension) of an evaluation set of one dataset: ``eval_audio@AVE``."""
    return f"{name}@{dataset}"


def graph_paired_sets(modalities: Mapping[str, str], dataset: str) -> dict[str, str]:
    """``{space: file name}`` of the true pairs a paired graph (mode ``paired``) trains on:
    ``paired_<its modality>_<the other's>@<dataset>`` (the demo's audio–3D: ``clap/paired_audio_points@demo``)."""
    (a, ma), (b, mb) = modalities.items()
    return {a: set_name(f"paired_{ma}_{mb}", dataset), b: set_name(f"paired_{mb}_{ma}", dataset)}


def set_modality(name: str) -> str:
    """The modality of a set (file name without ``@<dataset>``); a paired graph's ``paired_<m>_<other>`` is m."""
    if name in EVAL_SET_MODALITY:
        return EVAL_SET_MODALITY[name]
    if name.startswith("graph_") and name.count("_") == 1:  # a graph task of your own's set: graph_<modality>
        return name.split("_", 1)[1]
    if name.startswith("paired_") and name.count("_") == 2:
        return name.split("_")[1]
    raise KeyError(f"unknown evaluation set {name!r}")


def paired_sets(connection: str, dataset: str) -> dict[str, str]:
    """``{space: file name}`` of the true pairs a paired-data reference of ``connection`` trains on."""
    return {space: set_name(name, dataset) for space, name, _ in PAIRED_SETS[connection]}


def evaluation_sets(benchmarks: Mapping[str, Any], space: str, tasks: Mapping[str, tuple] | None = None
                    ) -> dict[str, str]:
    """``{file name: set name}`` of the evaluation sets ``space`` contributes for the configured datasets;
    ``tasks``: the graph family's tasks when params declare some of their own (:func:`graph_tasks`)."""
    unknown = set(benchmarks) - set(BENCHMARK_SETS)
    if unknown:
        raise ValueError(f"benchmarks: unknown benchmark(s) {sorted(unknown)}; known: {sorted(BENCHMARK_SETS)}")
    out = {}
    for benchmark, datasets in benchmarks.items():
        sets = [(s, n) for _, s, n, _ in BENCHMARK_SETS[benchmark]]
        if benchmark == "graph" and tasks:
            sets += [(s, n) for task in tasks.values() for _, s, n in task[1:3] if (s, n) not in sets]
        for dataset in datasets or []:
            for set_space, name in sets:
                if set_space == space:
                    out[set_name(name, str(dataset))] = name
    return out


#: the keys of a graph task of your own (``graph_tasks.<name>``) and of each of its two sides
GRAPH_TASK_KEYS, GRAPH_SIDE_KEYS = ("query", "gallery", "classes"), ("space", "modality")


def graph_tasks(params: Mapping[str, Any]) -> dict[str, tuple]:
    """The graph family's tasks: the built-in :data:`GRAPH_TASKS` and the retrieval tasks params declare —
    ``graph_tasks.<name>: {query: {space, modality}, gallery: {space, modality}, classes: [columns]}`` — for the
    modalities of spaces of your own (e.g. touch↔image). A declared side reads the set ``<space>/graph_<modality>@<D>``
    (rows joined by ``pair_id``; ``classes``: the query table's columns the exact ceiling groups by, default none:
    each pair its own class). Unchecked here (the validate stage checks: :func:`cmcr.validation`)."""
    declared = params.get("graph_tasks") or {}
    out = dict(GRAPH_TASKS)
    for name, entry in (declared.items() if isinstance(declared, Mapping) else ()):
        if not isinstance(entry, Mapping):
            continue
        sides = []
        for key in ("query", "gallery"):
            side = entry.get(key) or {}
            modality = str(side.get("modality")) if isinstance(side, Mapping) else "?"
            sides.append((modality, str(side.get("space")) if isinstance(side, Mapping) else "?", f"graph_{modality}"))
        out[str(name)] = ("retrieval", sides[0], sides[1], tuple(entry.get("classes") or ()))
    return out
