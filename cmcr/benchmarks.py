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
#: the modality of each evaluation (or paired-reference) set (what its space's loader is asked to load)
EVAL_SET_MODALITY = {"eval_audio": "audio", "eval_image": "image", "scene_proposals": "image",
                     "scene_audio": "audio", "eval_points": "points", "prompts": "text"} | {
    name: modality for sets in PAIRED_SETS.values() for _, name, modality in sets}


def set_name(name: str, dataset: str) -> str:
    """File name (without extension) of an evaluation set of one dataset: ``eval_audio@AVE``."""
    return f"{name}@{dataset}"


def paired_sets(connection: str, dataset: str) -> dict[str, str]:
    """``{space: file name}`` of the true pairs a paired-data reference of ``connection`` trains on."""
    return {space: set_name(name, dataset) for space, name, _ in PAIRED_SETS[connection]}


def evaluation_sets(benchmarks: Mapping[str, Any], space: str) -> dict[str, str]:
    """``{file name: set name}`` of the evaluation sets ``space`` contributes for the configured datasets."""
    unknown = set(benchmarks) - set(BENCHMARKS)
    if unknown:
        raise ValueError(f"benchmarks: unknown benchmark(s) {sorted(unknown)}; known: {sorted(BENCHMARKS)}")
    out = {}
    for benchmark, datasets in benchmarks.items():
        for dataset in datasets or []:
            for _, set_space, name, _ in BENCHMARK_SETS[benchmark]:
                if set_space == space:
                    out[set_name(name, str(dataset))] = name
    return out
