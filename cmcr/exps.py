"""A compact view of DVC experiments: the headline metrics and only the params that differ.

``dvc exp show`` lists every key of params.yaml and every dependency of every stage (DVC 3 offers no
setting to hide them by default): for this pipeline ~190 columns, every cell an ellipsis in a terminal.
:func:`experiment_table` reads the same data through ``dvc.api.exp_show`` and keeps what a reader compares:
the experiment's name, the params whose values differ between the rows shown, and the headline metrics of
``metrics/summary.json``. ``cmcr experiments`` prints it, fitted to a width (default 200 columns).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

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


def experiment_table(rows: Sequence[Mapping[str, Any]], metrics: Mapping[str, str], param_names: Iterable[str],
                     width: int = 200) -> str:
    """Render ``dvc.api.exp_show`` rows as a plain-text table no wider than ``width``.

    Columns: the experiment, every param of ``param_names`` whose value differs between the rows, then the
    metrics (``{column key in the rows: header}``). When the table is still too wide, the widest param
    columns are dropped first and named in a last line, so every cell shown stays readable.
    """
    rows = [r for r in rows if r.get("typ") != "queued"]
    params = [p for p in param_names if len({_text(r.get(p)) for r in rows}) > 1]
    metrics = {m: label for m, label in metrics.items() if any(r.get(m) is not None for r in rows)}
    headers = {p: p for p in params} | dict(metrics)

    def cells(columns: list[str]) -> list[list[str]]:
        return [["experiment", *(headers[c] for c in columns)]] + [
            [_name(r), *(_text(r.get(c)) for c in columns)] for r in rows]

    def render(columns: list[str]) -> list[str]:
        grid = cells(columns)
        widths = [max(len(line[i]) for line in grid) for i in range(len(grid[0]))]
        return ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))).rstrip()
                for line in grid]

    dropped: list[str] = []
    lines = render(params + list(metrics))
    while max(len(line) for line in lines) > width and params:
        widest = max(params, key=lambda p: max(len(p), *(len(_text(r.get(p))) for r in rows)))
        params.remove(widest)
        dropped.append(widest)
        lines = render(params + list(metrics))
    if dropped:
        lines.append(f"(also differing, not shown for width: {', '.join(sorted(dropped))})"[:width])
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
    import json

    import dvc.api

    from cmcr.params import load_params

    root = Path(root)
    rows = dvc.api.exp_show(repo=str(root), num=-1 if all_commits else 1, param_deps=False, force=False)
    summary = root / "metrics" / "summary.json"
    keys = flat_keys(json.loads(summary.read_text())) if summary.is_file() else []  # benchmark.dataset.metric
    datasets = {k.split(".")[1] for k in keys if k.count(".") == 2}
    # DVC names a metric by its dotted path (prefixed with the file only when two files share it)
    metrics = {k if any(k in r for r in rows) else f"metrics/summary.json:{k}":
               (k.split(".", 1)[1].replace(".", ":") if len(datasets) > 1 else k.rsplit(".", 1)[-1]) for k in keys}
    param_names = [p for p in flat_keys(load_params(root / "params.yaml")) if p not in _ROW_FIELDS]
    return experiment_table(rows, metrics, param_names, width)
