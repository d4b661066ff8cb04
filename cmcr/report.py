"""Result tables laid out like the paper's (Markdown) and plots (PNG for offline viewing).

For the paper setup (real embeddings) every table shows the paper's numbers beside ours; for the
demo world it shows the random baseline instead (the paper's numbers are not comparable to it).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cmcr.benchmarks import BENCHMARKS
from cmcr.closed_form import CONTEXT_ROWS, LinearConfig
from cmcr.metrics.seeds import SEEDS, SPREAD_KEY, STD, mean_std, paired_difference, seed_entries, seed_values
from cmcr.pages import figure, page
from cmcr.projector import count_parameters

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


def _get(m: Mapping[str, Any] | None, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(m, Mapping):
            return None
        m = m.get(key)
    return m


def cell(m: Mapping[str, Any], *path: str) -> str:
    """One score: ``mean ± std`` over the training seeds when ``m`` is a seed summary
    (:func:`cmcr.metrics.seeds.summarize_seeds`, more than one seed), else the number alone."""
    value, std = _get(m, path), _get(m.get(STD), path) if isinstance(m, Mapping) else None
    return _pm(value, std if isinstance(std, (int, float)) else None)


def seeds_note(metrics: Mapping[str, Any]) -> str:
    """How many training seeds the trained rows' mean ± std are over (read from the metrics themselves)."""
    runs = [m[SEEDS] for by_variant in datasets_of(metrics).values() for m in by_variant.values()
            if isinstance(m, Mapping) and SEEDS in m]
    if not runs:
        return ""
    counts = sorted({len(r) for r in runs})
    seeds = sorted({s for r in runs for s in r}, key=int)
    if counts == [1]:
        return f"\nTrained rows: one training seed ({seeds[0]}); no spread is shown (`seeds` in params.yaml).\n"
    return (f"\nTrained rows: mean ± sample standard deviation over {counts[-1]} training seeds ({', '.join(seeds)}; "
            "`seeds` in params.yaml). Random, no-connection, closed-form and ceiling rows involve no training "
            "(closed form: one deterministic fit, `cmcr/closed_form.py`, no seeds).\n")


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


def ours(label: str | None = None) -> str:
    """The label of our main row: ``C-MCR (ours)``, and the variant's own ``label`` from params.yaml when it has one."""
    return "C-MCR (ours)" + (f": {label}" if label else "")


def _methods(by_variant: Mapping[str, Any], variant: str, extra: Mapping[str, str] | None,
             label: str | None = None, random: str = "Random (expected)") -> list[tuple[str, str]]:
    names = ([("random", random), (variant, ours(label))] + list((extra or {}).items())
             + [("ceiling", "Ceiling (best possible on this benchmark)")])
    return [(n, text) for n, text in names if n in by_variant and "skipped" not in by_variant[n]]


_RETRIEVAL = [(f"{d} {k}", (d, k)) for d in ("A2I", "I2A") for k in ("mAP", "R@1", "R@5")]
#: the paper's four benchmark tables: title, columns (header, path in a row's scores), the paper's row per dataset
#: (its values in column order), the random row's label
BENCHMARK_TABLES = {
    "retrieval": ("Table 1 — zero-shot audio–image retrieval", _RETRIEVAL,
                  {ds: [v for d in ("A2I", "I2A") for v in rows[d]] for ds, rows in PAPER_TABLE1.items()}, "Random (expected)"),
    "localization": ("Table 2 — zero-shot audio-visual source localization", [(k, (k,)) for k in ("cIoU", "AUC")],
                     {ds: [r["cIoU"], r["AUC"]] for ds, r in PAPER_TABLE2.items()}, "Random proposal and confidence"),
    "counterfactual": ("Table 3 — zero-shot counterfactual audio-image recognition", [(k, (k,)) for k in ("AP", "Max-F1")],
                       {ds: [r["AP"], r["Max-F1"]] for ds, r in PAPER_TABLE3.items()}, "Random proposal and confidence"),
    "zeroshot3d": ("Table 4 — zero-shot 3D classification", [(f"Top{k}", (f"top{k}",)) for k in (1, 3, 5)],
                   {"ModelNet40": [PAPER_TABLE4[f"top{k}"] for k in (1, 3, 5)]}, "Random (expected)"),
}


def benchmark_table(benchmark: str, metrics: Mapping[str, Any], paper: bool, variant: str = "K",
                    extra: Mapping[str, str] | None = None, label: str | None = None) -> str:
    """Tables 1–4 (:data:`BENCHMARK_TABLES`): per dataset one row per method — random, ours (``variant``, shown with
    its ``label``), the ``extra`` rows (``{name: label}``), the ceiling — and the paper's row where ``paper``; below,
    the pairs each retrieval dataset scored and the seeds the trained rows' mean ± std are over."""
    title, columns, paper_rows, random = BENCHMARK_TABLES[benchmark]
    rows = []
    for dataset, by_variant in datasets_of(metrics).items():
        for name, text in _methods(by_variant, variant, extra, label, random):
            rows.append([dataset, text] + [cell(by_variant[name], *path) for _, path in columns])
        if paper and dataset in paper_rows:
            rows.append([dataset, "C-MCR (paper)"] + [_fmt(v) for v in paper_rows[dataset]])
    return (f"# {title}\n\n" + _table(["Dataset", "Method"] + [h for h, _ in columns], rows)
            + (pairs_note(metrics) if benchmark == "retrieval" else "") + seeds_note(metrics))


def pairs_note(retrieval: Mapping[str, Any]) -> str:
    """How many audio–image pairs each dataset scored of those listed (pairs are joined by ``pair_id``; an
    item that failed to load on either side drops its pair)."""
    counts = [f"{d} {m['pairs']['scored']} of {m['pairs']['listed']}" for d, m in datasets_of(retrieval).items()
              if "pairs" in m]
    return f"\nPairs scored (joined by pair_id; a pair with an item that failed to load is dropped): {'; '.join(counts)}.\n" if counts else ""


#: the graph table's columns: (task, direction, metric, header)
GRAPH_COLUMNS = [("audio_points", "A2P", "mAP", "A→3D mAP"), ("audio_points", "P2A", "mAP", "3D→A mAP"),
                 ("audio_text", "A2T", "mAP", "A→T mAP"), ("audio_text", "T2A", "mAP", "T→A mAP"),
                 ("audio_image", "A2I", "mAP", "A→I mAP"), ("audio_image", "I2A", "mAP", "I→A mAP"),
                 ("points_text", "top1", None, "3D→T top1"), ("points_text", "top5", None, "3D→T top5")]


def _own_task_columns(metrics: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """Columns of the graph tasks of your own (``graph_tasks``) that ``metrics`` has: both retrieval directions'
    mAP, in the order the ceiling lists them (``touch2I`` → header ``touch→I mAP``)."""
    built_in = {c[0] for c in GRAPH_COLUMNS}
    out: list[tuple[str, str, str, str]] = []
    for by_task in metrics.values():
        for task, m in (by_task.items() if isinstance(by_task, Mapping) else ()):
            if task in built_in or not isinstance(m, Mapping) or not isinstance(m.get("ceiling"), Mapping):
                continue
            for direction in m["ceiling"]:
                column = (task, direction, "mAP", f"{direction.replace('2', '→', 1)} mAP")
                if column not in out:
                    out.append(column)
    return out


def graph_table(metrics: Mapping[str, Any], rows: Mapping[str, str], notes: Mapping[str, str] | None = None) -> str:
    """The unified space's table (issue 22): per dataset one row per model — random, the no-connection baseline,
    the single connections, the graphs, the paired-data reference, the exact ceiling — and a column per task and
    direction (— where a model cannot embed a task's two modalities: see the notes below the table)."""
    columns = GRAPH_COLUMNS + _own_task_columns(metrics)
    header = ["Dataset", "Method"] + [c[3] for c in columns]
    out_rows, skipped = [], set()
    for dataset, by_task in metrics.items():
        if not isinstance(by_task, Mapping):
            continue
        present = [n for n in rows if any(isinstance(t, Mapping) and n in t for t in by_task.values())]
        for name in present:
            cells = []
            for task, direction, metric, _ in columns:
                m = by_task.get(task) or {}
                if "skipped" in m:
                    skipped.add(f"{task} on {dataset}: {m['skipped']}")
                cells.append(cell(m[name], *([direction, metric] if metric else [direction])) if name in m else "—")
            out_rows.append([dataset, rows[name]] + cells)
    text = ("# The MCR graph — every modality pair of the unified space\n\n"
            "Audio↔3D is emergent: no link ever pairs a sound with a shape (CLAP–CLIP through text, ULIP–CLIP through "
            "images). Retrieval: mAP, both directions, Table 1's protocol; 3D→T: zero-shot classification, Table 4's.\n\n"
            + _table(header, out_rows) + seeds_note({d: {n: m for t in by_task.values() if isinstance(t, Mapping)
                                                        for n, m in t.items()} for d, by_task in metrics.items()
                                                    if isinstance(by_task, Mapping)}))
    na = sorted({f"{rows.get(n, n)}: {task} — {why}" for by_task in metrics.values() if isinstance(by_task, Mapping)
                 for task, m in by_task.items() if isinstance(m, Mapping)
                 for n, why in (m.get("not_applicable") or {}).items() if n in rows})
    if na or skipped:
        text += "\nNot scored (—):\n\n" + "".join(f"- {line}\n" for line in na + sorted(skipped))
    return text + "".join((notes or {}).values())


def _map_columns(retrieval: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    datasets = list(datasets_of(retrieval))
    return datasets, [f"{d} {direction} mAP" for d in datasets for direction in ("A2I", "I2A")]


def _map_cells(retrieval: Mapping[str, Any], datasets: list[str], name: str, against: str | None = None) -> list[str]:
    """A2I and I2A mAP of ``name`` per dataset; with ``against`` (a variant), a cell whose paired difference to
    that variant's over the seeds is significant gets a † (:func:`cmcr.metrics.seeds.paired_difference`)."""
    cells = []
    for d in datasets:
        m, ref = retrieval[d].get(name), retrieval[d].get(against) if against else None
        for direction in ("A2I", "I2A"):
            text = cell(m, direction, "mAP") if m else "—"
            mine = seed_values(m, direction, "mAP") if isinstance(m, Mapping) and isinstance(ref, Mapping) else {}
            if mine and paired_difference(mine, seed_values(ref, direction, "mAP"))["significant"]:
                text += " †"
            cells.append(text)
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


def _mean_map_per_seed(retrieval: Mapping[str, Any], datasets: list[str], name: str) -> dict[str, float]:
    """``{seed: mean mAP over every dataset and direction}`` of one trained variant."""
    columns = [seed_values(retrieval[d][name], direction, "mAP") for d in datasets for direction in ("A2I", "I2A")
               if isinstance(retrieval[d].get(name), Mapping)]
    if not columns:
        return {}
    seeds = set.intersection(*(set(c) for c in columns))
    return {s: sum(c[s] for c in columns) / len(columns) for s in sorted(seeds, key=int)}


def _signed(x: float) -> str:
    return f"{x:+.2f}".replace("-", "−")


def reference_lines(retrieval: Mapping[str, Any], datasets: list[str], references: Mapping[str, str] | None) -> list[str]:
    """The context of a retrieval table, one line each: random, no connection, the paired-data references
    (``{variant: label}``), the closed-form maps (:data:`cmcr.closed_form.CONTEXT_ROWS`) and the benchmark's ceiling, A2I and I2A mAP per dataset (mean ± std where trained)."""
    rows = [("random", "Random (expected) mAP"), ("no_connection", "No connection (original spaces) mAP"),
            *((n, f"{label} mAP") for n, label in (references or {}).items()),
            *((row, f"Closed form ({LinearConfig(map_name, centre).label()}; no training) mAP")
              for row, map_name, centre in CONTEXT_ROWS),
            ("ceiling", "Ceiling mAP (a perfect ranker of the benchmark's classes, `cmcr/metrics/ceiling.py`)")]
    return [f"{label}: " + "; ".join(f"{d} A2I {cell(retrieval[d][key], 'A2I', 'mAP')}, I2A {cell(retrieval[d][key], 'I2A', 'mAP')}"
                                     for d in datasets if isinstance(retrieval[d].get(key), Mapping)
                                     and "skipped" not in retrieval[d][key]) + "."
            for key, label in rows
            if any(isinstance(retrieval[d].get(key), Mapping) and "skipped" not in retrieval[d][key] for d in datasets)]


def table5(retrieval: Mapping[str, Any], configs: Mapping[str, Any], paper: bool, rows: list[str] | None = None,
           references: Mapping[str, str] | None = None, labels: Mapping[str, str] | None = None) -> str:
    """Table 5: ablation rows with their switches (read from each row's resolved config), mAP (mean ± std over
    the training seeds), the paired difference to K and each row relative to K beside the paper's.

    ``rows``: the variants of group ``table5`` in params order (default: the paper's A–K present in
    ``configs``), shown by their ``labels`` (params.yaml ``label``) where given; a row the paper does not have gets "–" in the paper columns, and any config value
    in which a row differs from K beyond the switch columns is named in the last column. A score marked †
    differs from K's beyond the seed spread (:func:`cmcr.metrics.seeds.paired_difference`). Below the table:
    random, no connection, the paired-data references (``references``: {variant: label}) and the ceiling."""
    datasets, columns = _map_columns(retrieval)
    rows = [r for r in (rows if rows is not None else list("ABCDEFGHIJK")) if r in configs]
    header = ["Row", "Consistency", "Re-norm", "Noise", "L_ttc", "L_avc", "CLAP", "CLIP"] + columns
    header += ["Δ mean mAP vs K (paired)", "row / K", "paper row / K"]
    if paper:
        header += ["paper AVE A2I", "paper AVE I2A", "paper Flickr A2I", "paper Flickr I2A"]
    reference = _flat(configs["K"]) if "K" in configs else None
    header.append("Other changes vs K")
    k_seeds = _mean_map_per_seed(retrieval, datasets, "K") if "K" in rows else {}
    k_mean = sum(k_seeds.values()) / len(k_seeds) if k_seeds else None
    marked = False
    body = []
    for row in rows:
        c = configs[row]
        mode = {"softmax": "softmax", "argmax": "argmax", "random": CROSS}[c.memory.mode]
        tick = lambda b: TICK if b else CROSS  # noqa: E731
        cells = [(labels or {}).get(row, row), mode, tick(c.noise.renorm), tick(c.noise.enabled), tick(c.loss.shared_pair), tick(c.loss.pseudo_pair),
                 tick("clap" in c.loss.intra_spaces), tick("clip" in c.loss.intra_spaces)]
        scores = _map_cells(retrieval, datasets, row, against=None if row == "K" else "K")
        marked = marked or any(c.endswith(" †") for c in scores)
        cells += scores
        mine = _mean_map_per_seed(retrieval, datasets, row)
        if row == "K" or not mine or not k_seeds:
            cells.append("–")
        else:
            diff = paired_difference(mine, k_seeds)
            spread = "" if diff["std"] is None else f" ± {diff['std']:.2f}"
            cells.append(f"{_signed(diff['mean'])}{spread}{' †' if diff['significant'] else ''}")
            marked = marked or diff["significant"]
        cells.append(f"{sum(mine.values()) / len(mine) / k_mean:.2f}" if mine and k_mean else "–")
        cells.append(f"{sum(PAPER_TABLE5[row]) / sum(PAPER_TABLE5['K']):.2f}" if row in PAPER_TABLE5 else "–")
        if paper:
            cells += [_fmt(v) for v in PAPER_TABLE5[row]] if row in PAPER_TABLE5 else ["–"] * 4
        other = []
        if reference is not None:
            flat = _flat(c)
            other = [f"{k}={flat[k]!r}" for k in flat if k not in _TABLE5_SHOWN and flat[k] != reference.get(k)]
        cells.append(", ".join(other) or "–")
        body.append(cells)
    notes = reference_lines(retrieval, datasets, references)
    footnote = ("\n† the paired difference to K over the training seeds (same seed, same initial weights and batch "
                "order) is significant: |mean| > t₀.₉₇₅,ₙ₋₁ · sd / √n (two-sided paired t-test at 5 %, each cell on its "
                "own: with no correction for the table's many comparisons, about one in twenty is marked by chance). "
                + ("" if marked else "No row is marked. ")
                + "`row / K` is the row's mean mAP over every column divided by K's; `paper row / K` the same ratio "
                "of the paper's four Table 5 numbers.\n")
    return ("# Table 5 — ablations (retrieval mAP)\n\n" + _table(header, body) + seeds_note(retrieval) + footnote + "\n"
            + "\n".join(notes) + "\n")


def figure3_points(retrieval: Mapping[str, Any], configs: Mapping[str, Any], names: list[str]) -> list[dict[str, Any]]:
    """σ² sweep points (the figure3 variants and row K) per dataset, sorted by σ²: A2I and I2A mAP and their
    mean (means over the training seeds, with the std over seeds of each; ``None`` with one seed)."""
    points = []
    for dataset, by_variant in datasets_of(retrieval).items():
        per_var = {}
        for name in names:
            if name in by_variant and name in configs:
                m = by_variant[name]
                a2i, i2a = seed_values(m, "A2I", "mAP"), seed_values(m, "I2A", "mAP")
                both = {s: (a2i[s] + i2a[s]) / 2 for s in a2i if s in i2a}
                mean, std = mean_std(list(both.values())) if both else ((m["A2I"]["mAP"] + m["I2A"]["mAP"]) / 2, None)
                per_var[configs[name].noise.var] = {
                    "dataset": dataset, "var": configs[name].noise.var, "A2I": m["A2I"]["mAP"], "I2A": m["I2A"]["mAP"],
                    "mean_mAP": mean, "A2I_std": _get(m.get(STD), ("A2I", "mAP")),
                    "I2A_std": _get(m.get(STD), ("I2A", "mAP")), "mean_mAP_std": std, "variant": name}
        points += [per_var[k] for k in sorted(per_var)]
    return points


def _pm(mean: float | None, std: float | None) -> str:
    return _fmt(mean) if std is None or mean is None else f"{mean:.2f} ± {std:.2f}"


def figure3_table(points: list[dict[str, Any]], retrieval: Mapping[str, Any] | None = None,
                  references: Mapping[str, str] | None = None, labels: Mapping[str, str] | None = None,
                  scenes: Mapping[str, Mapping[str, Any]] | None = None, configs: Mapping[str, Any] | None = None) -> str:
    """The σ² sweep: retrieval mAP per σ² (the figure's points), then — where ``scenes`` holds the localization /
    counterfactual metrics — the same variants' cIoU, AUC, AP and Max-F1, since σ² moves those too."""
    labels = labels or {}
    rows = [[p["dataset"], f"{p['var']:g}", _pm(p["A2I"], p.get("A2I_std")), _pm(p["I2A"], p.get("I2A_std")),
             _pm(p["mean_mAP"], p.get("mean_mAP_std")), labels.get(p["variant"], p["variant"])] for p in points]
    context = reference_lines(retrieval, list(datasets_of(retrieval)), references) if retrieval else []
    text = "# Figure 3 — effect of the noise variance σ² (retrieval mAP)\n\n" + _table(
        ["Dataset", "σ²", "A2I mAP", "I2A mAP", "mean mAP", "variant"], rows) + (
        "\nMean ± std over the training seeds (`seeds` in params.yaml). Plot: `results/figure3.png`.\n") + (
        "\n" + "\n".join(context) + "\n" if context else "")
    names = list(dict.fromkeys(p["variant"] for p in points))
    for benchmark, keys, title in (("localization", ("cIoU", "AUC"), "source localization (Table 2's metrics)"),
                                   ("counterfactual", ("AP", "Max-F1"), "counterfactual recognition (Table 3's metrics)")):
        metrics = (scenes or {}).get(benchmark) or {}
        body = []
        for dataset, by_variant in datasets_of(metrics).items():
            present = [n for n in names if isinstance(by_variant.get(n), Mapping) and configs and n in configs]
            for n in sorted(present, key=lambda n: configs[n].noise.var):
                body.append([dataset, f"{configs[n].noise.var:g}"] + [cell(by_variant[n], k) for k in keys]
                            + [labels.get(n, n)])
            for n, label in (("random", "Random proposal and confidence"), ("ceiling", "Ceiling")):
                if isinstance(by_variant.get(n), Mapping) and "skipped" not in by_variant[n]:
                    body.append([dataset, "–"] + [cell(by_variant[n], k) for k in keys] + [label])
        if body:
            text += f"\n## σ² and {title}\n\n" + _table(["Dataset", "σ²", *keys, "variant"], body)
    return text


def text_sources_table(retrieval: Mapping[str, Any], labels: Mapping[str, str], paper: bool,
                       references: Mapping[str, str] | None = None) -> str:
    datasets, columns = _map_columns(retrieval)
    header = ["Texts"] + columns + (["paper AVE A2I", "paper AVE I2A", "paper Flickr A2I", "paper Flickr I2A"]
                                    if paper else [])
    rows = []
    for name, label in labels.items():
        cells = [label] + _map_cells(retrieval, datasets, name)
        if paper:
            cells += [_fmt(v) for v in PAPER_TEXT_SOURCES[name if name != "K" else "full"]]
        rows.append(cells)
    context = reference_lines(retrieval, datasets, references)
    return ("# Appendix A — training texts by source (retrieval mAP)\n\n" + _table(header, rows) + seeds_note(retrieval)
            + ("\n" + "\n".join(context) + "\n" if context else ""))


def scale_words(train: Any) -> str:
    """``"E epochs, batch B"`` as a checkpoint ran, with the training scale's rule when it was ``auto``."""
    auto = f" (scale auto: ≥ {train.auto_steps} steps, batch ≥ {train.auto_min_batch})" if train.auto_steps else ""
    return f"{train.epochs} epochs, batch {train.batch_size}{auto}"


def training_note(checkpoints: Mapping[str, Any]) -> str:
    """What produced a table's trained rows, read from their checkpoints (``{variant: GraphResult}`` of one link,
    :func:`cmcr.graph.load_unit` of the first seed): projector kind and sizes per space, trainable parameters, epochs,
    batch size and learning rate — so a ``-S projector.hidden_dim=512`` run's tables say so."""
    parts = []
    for name, result in checkpoints.items():
        (c,) = result.configs.values()  # a variant: one link
        sizes = ", ".join(f"{space} {projector.in_dim}→{c.projector.hidden_dim}→{projector.out_dim}"
                          if c.projector.kind != "official_ulip_clip" else f"{space} {projector.in_dim}→{projector.out_dim}"
                          for space, projector in result.projectors.items())
        parts.append(f"{name}: projector `{c.projector.kind}` ({sizes}; {count_parameters(result.projectors) / 1e6:.2f}M "
                     f"trainable parameters{'; BatchNorm statistics per modality' if c.projector.norm_stats == 'modality' else ''}), "
                     f"{scale_words(c.train)}, lr {c.train.lr:g}")
    return ("\nTrained with (from the checkpoints): " + "; ".join(parts) + ".\n") if parts else ""


def graph_note(results: Mapping[str, Any]) -> str:
    """What produced the graph rows, from their checkpoints (``{graph: GraphResult}``): mode, per space the
    module (kind, widths), trainable parameters, and the optimisation as it ran: joint, the first link's epochs /
    batch / lr for all links (what ``train_joint`` uses); extend and paired, each link's own (Ex-MCR: its switches)."""
    parts = []
    for name, result in results.items():
        g = result.graph
        if g.mode == "linear":
            parts.append(f"{name} (linear, base {g.base}): closed form, {g.closed_form}, no training")
            continue
        modules = ", ".join(f"{s} {m.kind}" + ("" if m.kind == "identity" else f" {m.in_dim}→{m.hidden_dim}→{m.out_dim}")
                            for s, m in result.projectors.items())
        params = sum(p.numel() for p in result.projectors.parameters() if p.requires_grad)
        if g.mode == "joint":  # one optimiser: the first link's epochs, batch size and lr (cmcr.graph.train_joint)
            lead, c = next(iter(result.configs.items()))
            links = (f"optimised together with the first link's settings ({lead}): {scale_words(c.train)} per link, "
                     f"lr {c.train.lr:g}; each link's own τ, σ², λ")
        else:
            links = "; ".join(f"{k} {scale_words(c.train)}, lr {c.train.lr:g}"
                              for k, c in result.configs.items())
        extra = f", extend {result.extend}" if result.extend else ""
        temperatures = ", ".join(f"{k} {c.loss.shared_temperature:g}/{c.loss.pseudo_temperature:g}" for k, c in result.configs.items())
        norms = "; BatchNorm statistics per modality" if any(c.projector.norm_stats == "modality" for c in result.configs.values()) else ""
        parts.append(f"{name} ({g.mode}{', base ' + g.base if g.base else ''}): {modules}; {params / 1e6:.2f}M trainable "
                     f"parameters; {links}{extra}; τ2/τ3 {temperatures}{norms}")
    return ("\nTrained with (from the checkpoints): " + " | ".join(parts) + ".\n") if parts else ""


def plot_figure3(points: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=120)
    for dataset in dict.fromkeys(p["dataset"] for p in points):
        mine = [p for p in points if p["dataset"] == dataset]
        spread = [p.get("mean_mAP_std") or 0.0 for p in mine]
        ax.errorbar([p["var"] for p in mine], [p["mean_mAP"] for p in mine], yerr=spread, fmt="o-", capsize=3,
                    label=f"{dataset} (mean of A2I, I2A; ± std over seeds)")
    ax.set_xlabel("noise variance σ²")
    ax.set_ylabel("mAP (%)")
    ax.set_title("Figure 3: σ² sweep")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def line_style(name: str, names: list[str]) -> tuple[Any, str, float]:
    """A curve's (colour, line style, width), distinct for up to 40 curves: 20 colours of matplotlib's
    ``tab20`` × two line styles; row K is black, thick and drawn on top, so it can always be found."""
    if name == "K":
        return "black", "-", 2.4
    import matplotlib

    others = [n for n in names if n != "K"]
    i = others.index(name) if name in others else len(others)
    return matplotlib.colormaps["tab20"](i % 20), ("-", "--")[(i // 20) % 2], 1.1


def plot_losses(histories: Mapping[str, Mapping[int, list[dict[str, float]]]], path: Path,
                ylabel: str = "training loss (Eq. 10), mean over seeds") -> None:
    """Training loss per epoch, one line per variant: the mean over its seeds (``histories[variant][seed]``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=120)
    for name, by_seed in histories.items():
        runs = [h for h in by_seed.values() if h]
        if not runs:
            continue
        epochs = min(len(h) for h in runs)
        color, style, width = line_style(name, list(histories))
        ax.plot([runs[0][e]["epoch"] for e in range(epochs)],
                [sum(h[e]["loss"] for h in runs) / len(runs) for e in range(epochs)], label=name, lw=width,
                color=color, ls=style, zorder=3 if name == "K" else 2)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=6, ncol=2, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


#: the score per benchmark that `metrics/summary.json` (the pipeline's only DVC metrics file) keeps
HEADLINE_METRICS = {"retrieval": [("A2I", "mAP"), ("I2A", "mAP")], "localization": [("cIoU",), ("AUC",)],
                    "counterfactual": [("AP",), ("Max-F1",)], "zeroshot3d": [("top1",)]}


def headline(scores: Mapping[str, Mapping[str, Any]], variants: Mapping[str, str]) -> dict[str, Any]:
    """A small, flat summary for `dvc exp show` / `dvc metrics diff`: per benchmark and dataset, the
    headline scores of the main variant of the benchmark's connection (``variants[connection]``, e.g.
    K for CLIP–CLAP, clip_ulip for CLIP–ULIP): the mean over the training seeds rounded to 2 decimals, with
    ``<metric>_std`` (sample std, 2 decimals; more than one seed) and ``<metric>_seed<s>`` (each seed, 4
    decimals) beside it (``metrics/summary_seeds.json``; :func:`headline_means` is ``metrics/summary.json``),
    so `dvc metrics diff --targets` shows the spread and ``cmcr experiments`` a paired test. Details stay in
    metrics/<benchmark>.json."""
    out: dict[str, Any] = {}
    for benchmark, by_dataset in scores.items():
        name = variants.get(BENCHMARKS[benchmark])
        for dataset, by_variant in datasets_of(by_dataset).items():
            m = by_variant.get(name) if name else None
            if not isinstance(m, Mapping) or "skipped" in m:
                continue
            row = {}
            for path in HEADLINE_METRICS[benchmark]:
                row |= _headline_cells(m, path, f"{name}_{'_'.join(path)}")
            if row:
                out.setdefault(benchmark, {})[dataset] = row
    return out


#: each graph's headline (``metrics/summary.json``'s ``graph`` block): the emergent pair no link trains (audio→3D)
#: and one direction of each pair its links train (audio→image through CLIP–CLAP, 3D→text through CLIP–ULIP):
#: ``(task, path in its scores, short name)``
GRAPH_HEADLINE = (("audio_points", ("A2P", "mAP"), "A3D_mAP"), ("audio_image", ("A2I", "mAP"), "A2I_mAP"),
                  ("points_text", ("top1",), "3D2T_top1"))


def graph_headline(graph_scores: Mapping[str, Any], graphs: Sequence[str]) -> dict[str, Any]:
    """The graphs' headline for :func:`headline`'s summary (``{"graph": {dataset: {...}}}``): per graph and
    dataset, :data:`GRAPH_HEADLINE`'s scores where the graph has them (a paired reference scores only audio↔3D),
    as ``<graph>_<short name>`` with ``_std`` and ``_seed<s>`` beside each, like the single connections' — so a
    graph experiment shows its effect in ``cmcr experiments`` and ``dvc exp show``."""
    out: dict[str, Any] = {}
    for dataset, tasks in datasets_of(graph_scores).items():
        row: dict[str, Any] = {}
        for graph in graphs:
            for task, path, short in GRAPH_HEADLINE:
                m = (tasks.get(task) or {}).get(graph)
                if isinstance(m, Mapping) and "skipped" not in m:
                    row |= _headline_cells(m, path, f"{graph}_{short}")
        if row:
            out.setdefault("graph", {})[dataset] = row
    return out


def _headline_cells(m: Mapping[str, Any], path: Sequence[str], key: str) -> dict[str, float]:
    """One headline score of a seed summary ``m``: ``key`` (the mean, 2 decimals), ``key_std`` (2 decimals, more
    than one seed) and ``key_seed<s>`` (4 decimals); nothing when ``m`` has no number at ``path``."""
    value: Any = m
    for part in path:
        value = value.get(part) if isinstance(value, Mapping) else None
    if not isinstance(value, (int, float)):
        return {}
    cells = {key: round(float(value), 2)}
    std = _get(m.get(STD), path)
    if isinstance(std, (int, float)):
        cells[f"{key}_std"] = round(float(std), 2)
    for seed, v in seed_values(m, *path).items():
        cells[f"{key}_seed{seed}"] = round(v, 4)
    return cells


def headline_means(summary: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`headline` without the ``_std`` / ``_seed<s>`` keys: the means, ``metrics/summary.json``."""
    return {b: {d: {k: v for k, v in values.items() if not SPREAD_KEY.search(k)} for d, values in by_dataset.items()}
            for b, by_dataset in summary.items()}


def plots_page(summary: Mapping[str, Any], images: Mapping[str, str], tables: list[str]) -> str:
    """``results/plots.html``: the pipeline's plots (PNG files beside the page), the headline metrics and
    links to the tables — the offline counterpart of ``dvc plots show``, whose page loads Vega from a CDN."""
    rows = ""
    for b, by_dataset in headline_means(summary).items():
        for d, means in by_dataset.items():
            spread = summary[b][d]  # the block with each headline's _std and _seed<s>
            rows += "".join(f"<tr><td>{html.escape(b)}</td><td>{html.escape(d)}</td><td>{html.escape(k)}</td>"
                            f"<td>{html.escape(_pm(v, spread.get(k + '_std')))}</td>"
                            f"<td>{len(seed_entries(spread, k)) or 1}</td></tr>" for k, v in means.items())
    body = ["<h2>Headline metrics (<code>metrics/summary.json</code>)</h2>",
            "<table><tr><th>benchmark</th><th>dataset</th><th>metric</th><th>mean ± std over seeds</th><th>seeds</th></tr>"
            + rows + "</table>",
            "<h2>Plots</h2>", "".join(figure(src, caption, width=520) for src, caption in images.items()),
            "<h2>Tables</h2><ul>" + "".join(f'<li><a href="{html.escape(t)}">{html.escape(t)}</a></li>' for t in tables)
            + "</ul>",
            '<p class="small">Static page: no server, no network. <code>dvc plots show</code> renders the same '
            "curves with Vega, which it loads from a CDN.</p>"]
    return page("C-MCR results", "\n".join(body))
