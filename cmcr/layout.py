"""Where the pipeline keeps each artifact, relative to the project root: the one source of dvc.yaml's paths
(``tests/test_dvc_deps.py`` checks every path dvc.yaml names is one of these), the stages', the API's and
``cmcr clean``'s. Nothing here reads a file."""

from __future__ import annotations

from pathlib import Path

WORLD = Path("data/world")
TEXTS = Path("data/texts.parquet")
EMBEDDINGS = Path("data/embeddings")              # extract@<space>: <space>/<set>.npy + .parquet
SHARDS = Path("data/shards")                      # extract@<space>'s resumable shards (outside DVC's outputs)
AGGREGATED = Path("data/aggregated")              # aggregate: <link>/<key>/<aggregate>.npy (cmcr.plan.aggregate_key)
#: a fixed text the aggregate stage writes beside the aggregates: what a trained unit depends on to run after
#: the aggregate stage (its aggregates are a function of its plan and the embeddings, both its own deps, so a
#: link added elsewhere does not retrain it)
AGGREGATES_DONE = AGGREGATED / "DONE.txt"
SPACES = Path("models/spaces")                    # the demo's stand-in spaces: <space>.pt
CONNECTIONS = Path("models/connections")          # train@<variant>: <variant>/seed<s>.pt
HISTORY = Path("models/history")                  # train@<variant>: <variant>/seed<s>.json
GRAPHS = Path("models/graphs")                    # graph@<name>: <name>/seed<s>.pt
GRAPH_HISTORY = Path("models/graph_history")      # graph@<name>: <name>/seed<s>.json
EVAL = Path("data/eval")                          # evaluate, evaluate_graph: per-item scores (<family>_items.parquet)
METRICS = Path("metrics")
RESULTS = Path("results")
PLUGINS = Path("plugins")                         # encoders of your own spaces (setup paper)
BYO = Path("byo/embeddings")                      # setup byo: your own <space>/<set>.npy + .parquet

#: the validate stage's output: the resolved plans every later stage reads instead of params.yaml
PLANS = Path("data/params")
VALID = PLANS / "valid.txt"
AGGREGATE_PLAN = PLANS / "aggregates.json"
OVERVIEW_PLAN = PLANS / "overview.json"            # report and the API: setup, seeds, datasets, the units' labels, configs


def variant_plan(name: str) -> Path:
    """``train@<name>``'s plan: the variant's effective config, seeds and aggregate folder."""
    return PLANS / "variants" / f"{name}.json"


def graph_plan(name: str) -> Path:
    """``graph@<name>``'s plan: the graph, each link's effective config, seeds and aggregate folders."""
    return PLANS / "graphs" / f"{name}.json"


def stage_plan(stage: str) -> Path:
    """A data stage's plan (``world``, ``texts``, ``spaces``): the params it reads (``{"params": {…}}``)."""
    return PLANS / "stages" / f"{stage}.json"


def space_plan(space: str) -> Path:
    """``extract@<space>``'s plan: the sets the space embeds (``{file: [modality, required]}``) and the params it reads."""
    return PLANS / "spaces" / f"{space}.json"


def evaluation_plan(family: str) -> Path:
    """The plan of one benchmark of the ``evaluate`` stage, or ``evaluate_graph``'s (family ``graph``): what it scores — datasets, tasks,
    the units and seeds it loads."""
    return PLANS / "evaluate" / f"{family}.json"


def checkpoint_path(folder: str | Path, unit: str, seed: int, suffix: str = ".pt") -> Path:
    """Where a trained unit's seed is written: ``<folder>/<unit>/seed<seed><suffix>`` (checkpoints in
    :data:`CONNECTIONS` / :data:`GRAPHS`, training histories in :data:`HISTORY` / :data:`GRAPH_HISTORY`, ``.json``)."""
    return Path(folder) / unit / f"seed{seed}{suffix}"


#: every artifact root above: what each path dvc.yaml names starts with (tests/test_dvc_deps.py)
ARTIFACT_ROOTS = (WORLD, TEXTS, EMBEDDINGS, AGGREGATED, SPACES, CONNECTIONS, HISTORY, GRAPHS, GRAPH_HISTORY, EVAL, METRICS,
                  RESULTS, BYO, PLANS, PLUGINS)
