"""A compact view of DVC experiments: the headline metrics and only the params that differ.

``dvc exp show`` lists every key of params.yaml and every dependency of every stage (DVC 3 offers no
setting to hide them by default): for this pipeline ~190 columns, every cell an ellipsis in a terminal.
:func:`experiment_table` reads the same data through ``dvc.api.exp_show`` and keeps what a reader compares:
the experiment's name, the params whose values differ between the rows shown, and the headline metrics of
``metrics/summary.json``. ``cmcr experiments`` prints it, fitted to a width (default 200 columns).

Each headline cell is ``mean±std`` over the training seeds (``metrics/summary_seeds.json``, git-tracked beside
the DVC metrics file, keeps every seed's value as ``<metric>_seed<s>``; each row's is read from its own git
revision), and an experiment's cell adds its paired
difference to its baseline commit over the seeds both have, ``(Δ+0.41†)``, with † where a two-sided paired
t-test at 5 % calls it real (:func:`cmcr.metrics.seeds.paired_difference`) — the same test as Table 5. A row
DVC has not finished (queued, running, failed) shows its state instead of numbers: DVC fills such a row with
the baseline's metrics, which are not the experiment's.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import dvc.api

from cmcr.metrics.seeds import SPREAD_KEY, mean_std, paired_difference, seed_entries
from cmcr.params import load_params

#: columns of ``dvc.api.exp_show`` rows that describe the row, not the experiment's params or metrics
_ROW_FIELDS = ("Experiment", "rev", "typ", "Created", "parent", "State", "Executor")


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_text(v) for v in value) + "]"
    return str(value)


def _name(row: Mapping[str, Any]) -> str:
    name = row.get("Experiment") or ""
    rev = str(row.get("rev") or "")
    if row.get("typ") == "baseline":
        return rev or "baseline"
    if name and rev and name != rev:
        return f"{name}@{rev[:7]}"  # one token: the table splits on whitespace
    return name or rev[:7] or "workspace"


#: DVC's experiment states whose metrics are not the experiment's own (DVC shows the baseline's)
_UNFINISHED = {"queued", "running", "failed"}


def _metric_cell(row: Mapping[str, Any], key: str, baseline: Mapping[str, Any] | None) -> str:
    state = str(row.get("State") or "").lower()
    if state in _UNFINISHED:
        return state
    seeds = seed_entries(row, key)
    if not seeds:  # a summary written before seeds were recorded: the mean alone
        return _text(row.get(key))
    mean, std = mean_std(list(seeds.values()))
    text = f"{mean:.2f}" + ("" if std is None else f"±{std:.2f}")
    if baseline is not None:
        reference = seed_entries(baseline, key)
        if any(s in reference for s in seeds):
            diff = paired_difference(seeds, reference)
            text += f"(Δ{diff['mean']:+.2f}{'†' if diff['significant'] else ''})"
    return text


def experiment_table(rows: Sequence[Mapping[str, Any]], metrics: Mapping[str, str], param_names: Iterable[str],
                     width: int = 200) -> str:
    """Render ``dvc.api.exp_show`` rows as a plain-text table no wider than ``width``.

    Columns: the experiment, every param of ``param_names`` whose value differs between the rows, then the
    headline metrics (``{column key in the rows: header}``; their ``_std`` / ``_seed<s>`` columns are read,
    not shown): ``mean±std`` over seeds, and for an experiment its paired difference to the baseline commit
    above it. Metrics that do not fit beside the params go to another block below (same rows); when one metric
    beside the params is still too wide, the widest param columns are dropped first and named in a last line, so
    every cell shown stays readable.
    """
    rows = list(rows)
    baselines: list[Mapping[str, Any] | None] = []
    current = None
    for r in rows:  # exp_show lists each baseline commit, then its experiments
        if r.get("typ") == "baseline":
            current = r
            baselines.append(None)
        else:
            baselines.append(current if r.get("typ") != "workspace" else None)
    params = [p for p in param_names if len({_text(r.get(p)) for r in rows}) > 1]
    metrics = {m: label for m, label in metrics.items() if not SPREAD_KEY.search(m) and any(
        r.get(m) is not None or seed_entries(r, m) for r in rows)}
    headers = {p: p for p in params} | dict(metrics)

    def cells(columns: list[str]) -> list[list[str]]:
        return [["experiment", *(headers[c] for c in columns)]] + [
            [_name(r), *(_metric_cell(r, c, base) if c in metrics else _text(r.get(c)) for c in columns)]
            for r, base in zip(rows, baselines)]

    def render(columns: list[str]) -> list[str]:
        grid = cells(columns)
        widths = [max(len(line[i]) for line in grid) for i in range(len(grid[0]))]
        return ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))).rstrip()
                for line in grid]

    def layout(params: list[str]) -> list[str]:
        """The metrics in as few blocks as fit the width (each block repeats the experiment and param columns,
        blocks separated by an empty line): the graphs' headlines sit below the connections' when both do not
        fit on one line."""
        blocks: list[list[str]] = [[]]
        for m in metrics:
            if blocks[-1] and max(len(line) for line in render(params + blocks[-1] + [m])) > width:
                blocks.append([])
            blocks[-1].append(m)
        return [line for i, block in enumerate(blocks) for line in ([""] if i else []) + render(params + block)]

    dropped: list[str] = []
    lines = layout(params)
    while max(len(line) for line in lines) > width and params:
        widest = max(params, key=lambda p: max(len(p), *(len(_text(r.get(p))) for r in rows)))
        params.remove(widest)
        dropped.append(widest)
        lines = layout(params)
    if dropped:
        lines.append(f"(also differing, not shown for width: {', '.join(sorted(dropped))})"[:width])
    if any("(Δ" in line for line in lines):
        lines.append("mean±std over the training seeds; (Δ…) the experiment's paired difference to its baseline "
                     "commit over the same seeds, † significant (two-sided paired t-test, 5 %)"[:width])
    return "\n".join(lines) + "\n"


def flat_keys(data: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of the leaves of a nested mapping (lists are leaves), as DVC names params and metrics."""
    out = []
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out += flat_keys(value, path + ".")
        else:
            out.append(path)
    return out


def show_experiments(root: str | Path = ".", width: int = 200, all_commits: bool = False) -> str:
    """The compact table of the experiments of the repository at ``root`` (``dvc.api.exp_show``), with the
    params of params.yaml and the metrics of metrics/summary.json as they are in the workspace."""
    root = Path(root)
    rows = dvc.api.exp_show(repo=str(root), num=-1 if all_commits else 1, param_deps=False, force=False)
    summary = root / "metrics" / "summary.json"
    keys = [k for k in (flat_keys(json.loads(summary.read_text())) if summary.is_file() else [])
            if not SPREAD_KEY.search(k)]  # benchmark.dataset.metric, headlines only
    keys.sort(key=lambda k: k.startswith("graph."))  # the single connections' first, then the graphs' (stable)
    datasets = {k.split(".")[1] for k in keys if k.count(".") == 2}
    # DVC names a metric by its dotted path (prefixed with the file only when two files share it)
    columns = {k: k if any(k in r for r in rows) else f"metrics/summary.json:{k}" for k in keys}
    metrics = {columns[k]: (k.split(".", 1)[1].replace(".", ":") if len(datasets) > 1 else k.rsplit(".", 1)[-1])
               for k in keys}
    rows = [r | seed_values_of(root, r, columns) for r in rows]
    param_names = [p for p in flat_keys(load_params(root / "params.yaml")) if p not in _ROW_FIELDS]
    return experiment_table(rows, metrics, param_names, width)


SEEDS_FILE = "metrics/summary_seeds.json"


def seed_values_of(root: Path, row: Mapping[str, Any], columns: Mapping[str, str]) -> dict[str, float]:
    """Every seed's headline values of one ``exp_show`` row, read from ``metrics/summary_seeds.json`` as the row's
    revision has it (git-tracked; the workspace's file for the workspace row), keyed ``<metric column>_seed<s>``
    (what :func:`experiment_table` reads). Empty where the revision has no such file (an older commit, a
    queued experiment)."""
    rev = str(row.get("rev") or "")
    if row.get("typ") == "workspace" or rev == "workspace":
        path = root / SEEDS_FILE
        text = path.read_text() if path.is_file() else ""
    else:
        out = subprocess.run(["git", "show", f"{rev}:{SEEDS_FILE}"], cwd=root, capture_output=True, text=True)
        text = out.stdout if out.returncode == 0 else ""
    try:
        data = json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}
    out: dict[str, float] = {}
    for key, column in columns.items():
        *path, headline = key.split(".")  # benchmark.dataset.metric
        block: Any = data
        for part in path:
            block = block.get(part) if isinstance(block, Mapping) else None
        if isinstance(block, Mapping):
            out |= {f"{column}_seed{seed}": value for seed, value in seed_entries(block, headline).items()}
    return out
