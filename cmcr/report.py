"""Result tables laid out like the paper's (Markdown) and plots (PNG for offline viewing).

For the paper setup (real embeddings) every table shows the paper's numbers beside ours; for the
demo world it shows the random baseline instead (the paper's numbers are not comparable to it).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: Paper numbers (C-MCR rows). Table 1: mAP / R@1 / R@5 per dataset and direction.
PAPER_TABLE1 = {
    "AVE": {"A2I": (4.11, 1.25, 4.54), "I2A": (4.13, 1.25, 4.44)},
    "Flickr-SoundNet": {"A2I": (4.57, 1.38, 5.40), "I2A": (4.92, 1.58, 5.98)},
}
PAPER_TABLE2 = {"MUSIC-Solo": {"cIoU": 53.78, "AUC": 56.09}, "VGGSS": {"cIoU": 48.08, "AUC": 48.69}}  # by dataset name
PAPER_TABLE3 = {"Ex-VGGSS": {"AP": 50.91, "Max-F1": 58.98}, "Ex-FlickrNet": {"AP": 73.67, "Max-F1": 74.02}}
PAPER_TABLE4 = {"top1": 64.9, "top3": 87.0, "top5": 92.8}
#: Table 5: AVE A2I, AVE I2A, Flickr A2I, Flickr I2A (mAP)
PAPER_TABLE5 = {
    "A": (4.09, 4.11, 4.52, 4.71), "B": (3.97, 4.08, 4.44, 4.79), "C": (3.14, 3.22, 3.63, 3.51),
    "D": (3.28, 3.30, 3.69, 3.50), "E": (4.09, 4.10, 4.42, 4.54), "F": (0.22, 0.23, 0.18, 0.19),
    "G": (3.70, 3.88, 4.57, 4.62), "H": (2.77, 2.37, 2.72, 2.57), "I": (4.01, 3.99, 4.49, 4.52),
    "J": (2.62, 2.84, 2.52, 2.76), "K": (4.11, 4.13, 4.57, 4.92),
}
#: Appendix A (Figure 4 table): AVE A2I, AVE I2A, Flickr A2I, Flickr I2A (mAP)
PAPER_TEXT_SOURCES = {
    "full": (4.11, 4.13, 4.57, 4.92), "no_image_text": (3.83, 3.76, 3.97, 3.91),
    "no_video_text": (4.04, 4.05, 4.41, 4.78), "no_audio_text": (4.07, 3.88, 4.31, 4.59),
}
#: Table 5's switch columns, derived from each row's resolved config
TICK, CROSS = "✓", "×"


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    return "\n".join([_row(header), _row(["---"] * len(header))] + [_row(r) for r in rows]) + "\n"


def datasets_of(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The evaluated datasets of a benchmark's metrics (``{dataset: {variant: …}}``), skipped ones left out."""
    return {d: m for d, m in metrics.items() if isinstance(m, Mapping) and "skipped" not in m}


def in_order(metrics: Mapping[str, Any], datasets: list[str]) -> dict[str, Any]:
    """A benchmark's metrics with its datasets in the given order (e.g. the paper's, as params list them),
    then any others."""
    return {d: metrics[d] for d in datasets if d in metrics} | {d: m for d, m in metrics.items() if d not in datasets}


def _methods(by_variant: Mapping[str, Any], variant: str, extra: Mapping[str, str] | None) -> list[tuple[str, str]]:
    names = ([("random", "Random (expected)"), (variant, "C-MCR (ours)")] + list((extra or {}).items())
             + [("ceiling", "Ceiling (best possible on this benchmark)")])
    return [(n, label) for n, label in names if n in by_variant and "skipped" not in by_variant[n]]


def table1(retrieval: Mapping[str, Any], paper: bool, variant: str = "K", extra: Mapping[str, str] | None = None) -> str:
    """Table 1: zero-shot audio–image retrieval (mAP, R@1, R@5, both directions), one block per dataset."""
    header = ["Dataset", "Method", "A2I mAP", "A2I R@1", "A2I R@5", "I2A mAP", "I2A R@1", "I2A R@5"]
    rows = []
    for dataset, by_variant in datasets_of(retrieval).items():
        for name, label in _methods(by_variant, variant, extra):
            m = by_variant[name]
            rows.append([dataset, label] + [_fmt(m[d][k]) for d in ("A2I", "I2A") for k in ("mAP", "R@1", "R@5")])
        if paper and dataset in PAPER_TABLE1:
            rows.append([dataset, "C-MCR (paper)"] + [_fmt(v) for d in ("A2I", "I2A") for v in PAPER_TABLE1[dataset][d]])
    return "# Table 1 — zero-shot audio–image retrieval\n\n" + _table(header, rows) + pairs_note(retrieval)


def pairs_note(retrieval: Mapping[str, Any]) -> str:
    """How many audio–image pairs each dataset scored of those listed (pairs are joined by ``pair_id``; an
    item that failed to load on either side drops its pair)."""
    counts = [f"{d} {m['pairs']['scored']} of {m['pairs']['listed']}" for d, m in datasets_of(retrieval).items()
              if "pairs" in m]
    return f"\nPairs scored (joined by pair_id; a pair with an item that failed to load is dropped): {'; '.join(counts)}.\n" if counts else ""


def scene_table(title: str, metrics: Mapping[str, Any], keys: tuple[str, str], paper_rows: Mapping[str, Any],
                paper: bool, variant: str = "K", extra: Mapping[str, str] | None = None) -> str:
    """Tables 2 and 3: one row per method and dataset with two metrics (cIoU/AUC or AP/Max-F1)."""
    rows = []
    for dataset, by_variant in datasets_of(metrics).items():
        for name, label in _methods(by_variant, variant, extra):
            label = "Random proposal and confidence" if name == "random" else label
            rows.append([dataset, label] + [_fmt(by_variant[name][k]) for k in keys])
        if paper and dataset in paper_rows:
            rows.append([dataset, "C-MCR (paper)"] + [_fmt(paper_rows[dataset][k]) for k in keys])
    return f"# {title}\n\n" + _table(["Dataset", "Method", *keys], rows)


def table2(localization: Mapping[str, Any], paper: bool, extra: Mapping[str, str] | None = None) -> str:
    return scene_table("Table 2 — zero-shot audio-visual source localization", localization, ("cIoU", "AUC"),
                       PAPER_TABLE2, paper, extra=extra)


def table3(counterfactual: Mapping[str, Any], paper: bool, extra: Mapping[str, str] | None = None) -> str:
    return scene_table("Table 3 — zero-shot counterfactual audio-image recognition", counterfactual, ("AP", "Max-F1"),
                       PAPER_TABLE3, paper, extra=extra)


def table4(zeroshot: Mapping[str, Any], paper: bool, variant: str = "clip_ulip",
           extra: Mapping[str, str] | None = None) -> str:
    rows = []
    for dataset, by_variant in datasets_of(zeroshot).items():
        for name, label in _methods(by_variant, variant, extra):
            rows.append([dataset, label] + [_fmt(by_variant[name][k]) for k in ("top1", "top3", "top5")])
        if paper and dataset == "ModelNet40":
            rows.append([dataset, "C-MCR (paper)"] + [_fmt(PAPER_TABLE4[k]) for k in ("top1", "top3", "top5")])
    return "# Table 4 — zero-shot 3D classification\n\n" + _table(["Dataset", "Method", "Top1", "Top3", "Top5"], rows)


def _map_columns(retrieval: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    datasets = list(datasets_of(retrieval))
    return datasets, [f"{d} {direction} mAP" for d in datasets for direction in ("A2I", "I2A")]


def _map_cells(retrieval: Mapping[str, Any], datasets: list[str], name: str) -> list[str]:
    cells = []
    for d in datasets:
        m = retrieval[d].get(name)
        cells += [_fmt(m[direction]["mAP"]) if m else "—" for direction in ("A2I", "I2A")]
    return cells


#: config keys Table 5's switch columns show; any other difference from row K is listed in its own column
_TABLE5_SHOWN = {"memory.mode", "noise.renorm", "noise.enabled", "loss.shared_pair", "loss.pseudo_pair",
                 "loss.intra_spaces"}


def _flat(config: Any) -> dict[str, Any]:
    out = {}
    for group, values in config.to_dict().items():
        if isinstance(values, Mapping):
            for key, value in values.items():
                out[f"{group}.{key}"] = value
    return out


def table5(retrieval: Mapping[str, Any], configs: Mapping[str, Any], paper: bool, rows: list[str] | None = None) -> str:
    """Table 5: ablation rows with their switches (read from each row's resolved config) and mAP.

    ``rows``: the variants of group ``table5`` in params order (default: the paper's A–K present in
    ``configs``); a row the paper does not have gets "–" in the paper columns, and any config value
    in which a row differs from K beyond the switch columns is named in the last column."""
    datasets, columns = _map_columns(retrieval)
    rows = [r for r in (rows if rows is not None else list("ABCDEFGHIJK")) if r in configs]
    header = ["Row", "Consistency", "Re-norm", "Noise", "L_ttc", "L_avc", "CLAP", "CLIP"] + columns
    if paper:
        header += ["paper AVE A2I", "paper AVE I2A", "paper Flickr A2I", "paper Flickr I2A"]
    reference = _flat(configs["K"]) if "K" in configs else None
    header.append("Other changes vs K")
    body = []
    for row in rows:
        c = configs[row]
        mode = {"softmax": "softmax", "argmax": "argmax", "random": CROSS}[c.memory.mode]
        tick = lambda b: TICK if b else CROSS  # noqa: E731
        cells = [row, mode, tick(c.noise.renorm), tick(c.noise.enabled), tick(c.loss.shared_pair), tick(c.loss.pseudo_pair),
                 tick("clap" in c.loss.intra_spaces), tick("clip" in c.loss.intra_spaces)]
        cells += _map_cells(retrieval, datasets, row)
        if paper:
            cells += [_fmt(v) for v in PAPER_TABLE5[row]] if row in PAPER_TABLE5 else ["–"] * 4
        other = []
        if reference is not None:
            flat = _flat(c)
            other = [f"{k}={flat[k]!r}" for k in flat if k not in _TABLE5_SHOWN and flat[k] != reference.get(k)]
        cells.append(", ".join(other) or "–")
        body.append(cells)
    chance = "; ".join(f"{d} {_fmt(retrieval[d]['random']['A2I']['mAP'])}" for d in datasets)
    top = "; ".join(f"{d} {_fmt(retrieval[d]['ceiling']['A2I']['mAP'])}" for d in datasets if "ceiling" in retrieval[d])
    return ("# Table 5 — ablations (retrieval mAP)\n\n" + _table(header, body) + f"\nRandom (expected) mAP: {chance}.\n"
            + (f"Ceiling mAP (a perfect ranker of the benchmark's classes, `cmcr/metrics/ceiling.py`): {top}.\n"
               if top else ""))


def figure3_points(retrieval: Mapping[str, Any], configs: Mapping[str, Any], names: list[str]) -> list[dict[str, Any]]:
    """σ² sweep points (the figure3 variants and row K) per dataset, sorted by σ²; mean of A2I and I2A mAP."""
    points = []
    for dataset, by_variant in datasets_of(retrieval).items():
        per_var = {}
        for name in names:
            if name in by_variant and name in configs:
                m = by_variant[name]
                per_var[configs[name].noise.var] = {
                    "dataset": dataset, "var": configs[name].noise.var, "A2I": m["A2I"]["mAP"], "I2A": m["I2A"]["mAP"],
                    "mean_mAP": (m["A2I"]["mAP"] + m["I2A"]["mAP"]) / 2, "variant": name}
        points += [per_var[k] for k in sorted(per_var)]
    return points


def figure3_table(points: list[dict[str, Any]]) -> str:
    rows = [[p["dataset"], f"{p['var']:g}", _fmt(p["A2I"]), _fmt(p["I2A"]), _fmt(p["mean_mAP"]), p["variant"]]
            for p in points]
    return "# Figure 3 — effect of the noise variance σ² (retrieval mAP)\n\n" + _table(
        ["Dataset", "σ²", "A2I mAP", "I2A mAP", "mean mAP", "variant"], rows) + "\nPlot: `results/figure3.png`.\n"


def text_sources_table(retrieval: Mapping[str, Any], labels: Mapping[str, str], paper: bool) -> str:
    datasets, columns = _map_columns(retrieval)
    header = ["Texts"] + columns + (["paper AVE A2I", "paper AVE I2A", "paper Flickr A2I", "paper Flickr I2A"]
                                    if paper else [])
    rows = []
    for name, label in labels.items():
        cells = [label] + _map_cells(retrieval, datasets, name)
        if paper:
            cells += [_fmt(v) for v in PAPER_TEXT_SOURCES[name if name != "K" else "full"]]
        rows.append(cells)
    return "# Appendix A — training texts by source (retrieval mAP)\n\n" + _table(header, rows)


def plot_figure3(points: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=120)
    for dataset in dict.fromkeys(p["dataset"] for p in points):
        mine = [p for p in points if p["dataset"] == dataset]
        ax.plot([p["var"] for p in mine], [p["mean_mAP"] for p in mine], "o-", label=f"{dataset} (mean of A2I, I2A)")
    ax.set_xlabel("noise variance σ²")
    ax.set_ylabel("mAP (%)")
    ax.set_title("Figure 3: σ² sweep")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_losses(histories: Mapping[str, list[dict[str, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.5), dpi=120)
    for name, history in histories.items():
        ax.plot([h["epoch"] for h in history], [h["loss"] for h in history], label=name, lw=1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (Eq. 10)")
    ax.legend(fontsize=6, ncol=3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


#: the score per benchmark that `metrics/summary.json` (the pipeline's only DVC metrics file) keeps
HEADLINE_METRICS = {"retrieval": [("A2I", "mAP"), ("I2A", "mAP")], "localization": [("cIoU",), ("AUC",)],
                    "counterfactual": [("AP",), ("Max-F1",)], "zeroshot3d": [("top1",)]}


def headline(scores: Mapping[str, Mapping[str, Any]], variants: Mapping[str, str]) -> dict[str, Any]:
    """A small, flat summary for `dvc exp show` / `dvc metrics diff`: per benchmark and dataset, the
    headline scores of the main variant of the benchmark's connection (``variants[connection]``, e.g.
    K for CLIP–CLAP, clip_ulip for CLIP–ULIP), rounded to 2 decimals. Details stay in metrics/<benchmark>.json."""
    from cmcr.benchmarks import BENCHMARKS

    out: dict[str, Any] = {}
    for benchmark, by_dataset in scores.items():
        name = variants.get(BENCHMARKS[benchmark])
        for dataset, by_variant in datasets_of(by_dataset).items():
            m = by_variant.get(name) if name else None
            if not isinstance(m, Mapping) or "skipped" in m:
                continue
            row = {}
            for path in HEADLINE_METRICS[benchmark]:
                value: Any = m
                for key in path:
                    value = value.get(key) if isinstance(value, Mapping) else None
                if isinstance(value, (int, float)):
                    row[f"{name}_{'_'.join(path)}"] = round(float(value), 2)
            if row:
                out.setdefault(benchmark, {})[dataset] = row
    return out


def plots_page(summary: Mapping[str, Any], images: Mapping[str, str], tables: list[str]) -> str:
    """``results/plots.html``: the pipeline's plots (PNG files beside the page), the headline metrics and
    links to the tables — the offline counterpart of ``dvc plots show``, whose page loads Vega from a CDN."""
    import html

    from cmcr.pages import figure, page

    rows = "".join(f"<tr><td>{html.escape(b)}</td><td>{html.escape(d)}</td><td>{html.escape(k)}</td><td>{v:.2f}</td></tr>"
                   for b, by_dataset in summary.items() for d, values in by_dataset.items() for k, v in values.items())
    body = ["<h2>Headline metrics (<code>metrics/summary.json</code>)</h2>",
            "<table><tr><th>benchmark</th><th>dataset</th><th>metric</th><th>value</th></tr>" + rows + "</table>",
            "<h2>Plots</h2>", "".join(figure(src, caption, width=520) for src, caption in images.items()),
            "<h2>Tables</h2><ul>" + "".join(f'<li><a href="{html.escape(t)}">{html.escape(t)}</a></li>' for t in tables)
            + "</ul>",
            '<p class="small">Static page: no server, no network. <code>dvc plots show</code> renders the same '
            "curves with Vega, which it loads from a CDN.</p>"]
    return page("C-MCR results", "\n".join(body))
