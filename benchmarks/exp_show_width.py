"""How wide a terminal `dvc exp show --no-pager` needs before the headline metrics are readable.

    python benchmarks/exp_show_width.py            # this repository + a synthetic repository per column count
    python benchmarks/exp_show_width.py --no-synthetic

DVC renders its table with rich and collapses columns right to left ("…") when they do not fit. Every
column, collapsed or not, still costs one character of rich's column divider while the widths are
computed, so the width a table needs is about (width of what stays readable) + (number of columns). This
script measures that: for this repository (metrics of `metrics/summary.json`, every params.yaml leaf, every
dependency path) and for synthetic repositories with the same seven headline metrics and no stages, only
P params, it finds by bisection the smallest COLUMNS at which every headline metric's name is printed whole.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import typer

from cmcr.exps import flat_keys

app = typer.Typer(add_completion=False)


def exp_show(root: Path, columns: int) -> str:
    env = dict(os.environ, COLUMNS=str(columns), DVC_NO_ANALYTICS="1")
    return subprocess.run(["dvc", "exp", "show", "--no-pager"], cwd=root, env=env, text=True,
                          capture_output=True, check=True).stdout


def column_counts(root: Path) -> dict[str, int]:
    """Metrics, params and deps columns of the workspace row, as `dvc exp show --json` lists them."""
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    rows = json.loads(subprocess.run(["dvc", "exp", "show", "--json"], cwd=root, env=env, text=True,
                                     capture_output=True, check=True).stdout)
    data = rows[0]["data"]
    count = {kind: sum(len(flat_keys(f.get("data", {}))) for f in (data.get(kind) or {}).values())
             for kind in ("metrics", "params")}
    count["deps"] = len(data.get("deps") or {})
    return count


def needed_width(root: Path, names: list[str], low: int = 40, high: int = 2000) -> tuple[int, int]:
    """The smallest COLUMNS at which every name is printed whole in the header, and the printed width there."""
    def readable(columns: int) -> bool:
        header = exp_show(root, columns).splitlines()[1:2]
        return bool(header) and all(f" {n} " in header[0] for n in names)

    if not readable(high):
        raise RuntimeError(f"{root}: the headline metrics are not readable even at {high} columns")
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if readable(mid) else (mid, high)
    return high, max(len(line) for line in exp_show(root, high).splitlines())


def synthetic_repo(path: Path, metrics: dict[str, float], n_params: int) -> None:
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=path, env=env, check=True)
    (path / "metrics.json").write_text(json.dumps(metrics))
    (path / "params.yaml").write_text("".join(f"p{i:03d}: 0.5\n" for i in range(n_params)) or "{}\n")
    (path / "dvc.yaml").write_text("metrics:\n  - metrics.json\n")
    subprocess.run(["git", "add", "-A"], cwd=path, check=True)
    subprocess.run(["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "init"], cwd=path, check=True)


@app.command()
def main(root: Path = typer.Option(Path("."), help="the pipeline's repository"),
         synthetic: bool = typer.Option(True, help="also measure synthetic repositories (0-200 params)")) -> None:
    summary = json.loads((root / "metrics" / "summary.json").read_text())
    names = flat_keys(summary)
    counts = column_counts(root)
    total = sum(counts.values())
    needed, printed = needed_width(root, names)
    typer.echo(f"this repository: {counts['metrics']} metrics + {counts['params']} params + {counts['deps']} deps "
               f"= {total} columns; every headline metric readable from COLUMNS={needed} "
               f"(the table then prints {printed} characters wide; {needed - printed} go to collapsed columns)")
    if not synthetic:
        return
    short = {n.rsplit(".", 1)[-1]: 1.0 for n in names}
    for n_params in (0, 50, 100, 200):
        with tempfile.TemporaryDirectory() as tmp:
            synthetic_repo(Path(tmp), short, n_params)
            needed, printed = needed_width(Path(tmp), list(short))
        typer.echo(f"synthetic, {len(short)} metrics + {n_params:3d} params, no deps: readable from COLUMNS={needed} "
                   f"(printed {printed} wide)")


if __name__ == "__main__":
    app()
