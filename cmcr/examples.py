"""Qualitative results as static pages: what a sound retrieves, where it is localized, what a cloud is.

Every shown item becomes a small file beside the page, read by the project's own readers
(:func:`cmcr.sources.images.load_image`, :func:`cmcr.sources.audio.read_audio`,
:func:`cmcr.sources.points.read_point_cloud`): an image thumbnail (with boxes drawn for localization),
a sound as a short 16 kHz WAV for the page's player plus its waveform as a PNG, a point cloud rendered
to a PNG (orthographic view, shaded by depth). Pages are :mod:`cmcr.pages` documents: no server, no
network, checked in headless Chromium.
"""

from __future__ import annotations

import html
import io
import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import torch
from PIL import Image, ImageDraw

from cmcr.artifacts import ArtifactError, atomic_path
from cmcr.benchmarks import BENCHMARKS, GRAPH_TASKS
from cmcr.evaluation import load_benchmark, load_task
from cmcr.graph import load_unit
from cmcr.metrics.localization import score_scenes
from cmcr.metrics.zeroshot import class_embeddings
from cmcr.pages import page
from cmcr.sources.audio import read_audio
from cmcr.sources.images import load_image
from cmcr.sources.points import read_point_cloud

THUMB = 128
AUDIO_RATE = 16_000
AUDIO_SECONDS = 5.0


#: a hit's verdict on the page: the query's own pair, another item of the query's class (right too: the benchmark
#: cannot tell them apart, its ceiling counts them), neither; None: no verdict (a query)
MARKS = {True: '<span style="color:#1a7f37">✓ exact pair</span>',
         "class": '<span style="color:#0b6e99">✓ same class</span>',
         "concept": '<span style="color:#0b6e99">✓ same concept</span>',
         False: '<span style="color:#b42318">✗</span>'}


@dataclass
class Tile:
    """One item on a page: its rendering (PNG and, for audio, a WAV), a caption, and a verdict (:data:`MARKS`)."""

    image: str | None = None
    audio: str | None = None
    text: str | None = None
    caption: str = ""
    correct: bool | str | None = None
    extra: list[str] = field(default_factory=list)

    def html(self) -> str:
        mark = MARKS.get(self.correct, "")
        parts = []
        if self.image:
            parts.append(f'<img src="{html.escape(self.image)}" alt="{html.escape(self.caption)}" width="{THUMB}">')
        if self.audio:
            parts.append(f'<br><audio controls preload="none" src="{html.escape(self.audio)}" style="width:{THUMB}px">'
                         "</audio>")
        if self.text:
            parts.append(f'<div class="text">“{html.escape(self.text)}”</div>')
        lines = [html.escape(self.caption)] + [html.escape(e) for e in self.extra] + ([mark] if mark else [])
        return (f'<figure style="width:{THUMB + 8}px">' + "".join(parts) + "<figcaption>" + "<br>".join(lines)
                + "</figcaption></figure>")


class Renderer:
    """Writes item renderings into ``folder`` (beside the page) and returns their page-relative paths."""

    def __init__(self, folder: Path, page_dir: Path) -> None:
        self.folder, self.page_dir = folder, page_dir
        self.trust_pickle = False  # the default for point-cloud tiles (pickled .npy files need it)
        folder.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def _name(self, stem: str, suffix: str) -> tuple[Path, str]:
        self.count += 1
        path = self.folder / f"{self.count:03d}_{stem}{suffix}"
        return path, path.relative_to(self.page_dir).as_posix()

    def image(self, path: str | Path, boxes: Sequence[tuple[Sequence[float], str]] = ()) -> str:
        """A thumbnail of an image, with ``(box, colour)`` rectangles drawn (boxes in the image's pixels)."""
        img = load_image(path)
        scale = THUMB / max(img.width, img.height)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))))
        draw = ImageDraw.Draw(img)
        for box, colour in boxes:
            x1, y1, x2, y2 = (float(v) * scale for v in box)
            draw.rectangle((x1, y1, x2 - 1, y2 - 1), outline=colour, width=2)
        out, rel = self._name(Path(str(path)).stem, ".png")
        img.save(out, optimize=True)
        return rel

    def audio(self, path: str | Path) -> tuple[str, str]:
        """The first ``AUDIO_SECONDS`` of a sound as a 16 kHz WAV (for the player) and its waveform (PNG)."""
        wave = read_audio(path, AUDIO_RATE)[: int(AUDIO_RATE * AUDIO_SECONDS)]
        wav, wav_rel = self._name(Path(str(path)).stem, ".wav")
        buffer = io.BytesIO()
        soundfile.write(buffer, wave, AUDIO_RATE, format="WAV", subtype="PCM_16")
        wav.write_bytes(buffer.getvalue())
        width, height = THUMB, THUMB // 2
        img = Image.new("RGB", (width, height), (250, 250, 250))
        draw = ImageDraw.Draw(img)
        peak = float(np.abs(wave).max()) or 1.0
        for x, segment in enumerate(np.array_split(wave, width)):
            if len(segment):
                lo, hi = float(segment.min()) / peak, float(segment.max()) / peak
                draw.line((x, height / 2 * (1 - hi), x, height / 2 * (1 - lo)), fill=(40, 90, 160))
        png, png_rel = self._name(Path(str(path)).stem + "_wave", ".png")
        img.save(png, optimize=True)
        return wav_rel, png_rel

    def points(self, path: str | Path, trust_pickle: bool = False) -> str:
        """A point cloud (N×3+) seen from a fixed oblique angle, orthographic, nearer points darker and drawn last."""
        xyz = np.asarray(read_point_cloud(path, trust_pickle=trust_pickle), dtype=np.float64)[:, :3]
        xyz = xyz - xyz.mean(axis=0)
        xyz /= float(np.abs(xyz).max()) or 1.0
        a, b = np.radians(35.0), np.radians(25.0)
        rot_y = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
        rot_x = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
        view = xyz @ rot_y.T @ rot_x.T
        if len(view) > 4096:
            view = view[np.random.default_rng(0).choice(len(view), 4096, replace=False)]
        order = np.argsort(view[:, 2])  # far first
        img = Image.new("RGB", (THUMB, THUMB), (255, 255, 255))
        draw = ImageDraw.Draw(img)
        half = THUMB / 2 - 4
        depth = (view[:, 2] - view[:, 2].min()) / (np.ptp(view[:, 2]) or 1.0)
        for i in order:
            x, y = THUMB / 2 + view[i, 0] * half, THUMB / 2 - view[i, 1] * half
            shade = int(200 - 170 * depth[i])
            draw.ellipse((x - 1, y - 1, x + 1, y + 1), fill=(shade, shade, 255 - shade // 3))
        out, rel = self._name(Path(str(path)).stem, ".png")
        img.save(out, optimize=True)
        return rel

    def tile(self, modality: str, item: Any, caption: str, correct: bool | str | None = None,
             extra: Sequence[str] = (), boxes: Sequence[tuple[Sequence[float], str]] = (),
             trust_pickle: bool | None = None) -> Tile:
        """A tile of any modality; a file that cannot be rendered becomes a tile saying why."""
        trust_pickle = self.trust_pickle if trust_pickle is None else trust_pickle
        try:
            if modality == "image":
                return Tile(image=self.image(item, boxes), caption=caption, correct=correct, extra=list(extra))
            if modality == "audio":
                wav, png = self.audio(item)
                return Tile(image=png, audio=wav, caption=caption, correct=correct, extra=list(extra))
            if modality == "points":
                return Tile(image=self.points(item, trust_pickle), caption=caption, correct=correct, extra=list(extra))
            return Tile(text=str(item), caption=caption, correct=correct, extra=list(extra))
        except (OSError, ValueError) as exc:
            return Tile(caption=caption, correct=correct, extra=list(extra) + [f"(not rendered: {exc})"])


def row(title: str, query: Tile, hits: Sequence[Tile]) -> str:
    """One query and its results, side by side."""
    return (f'<div class="row"><h3>{html.escape(title)}</h3>' + query.html()
            + '<span class="arrow">→</span>' + "".join(t.html() for t in hits) + "</div>")


EXTRA_STYLE = """<style>
.row { margin: 0.6em 0 1.4em; } .row h3 { font-size: 0.95em; margin: 0.2em 0; }
.arrow { display: inline-block; font-size: 2em; margin: 2em 0.4em; vertical-align: top; color: #888; }
.text { font-size: 0.85em; width: 128px; } figure { margin: 0.3em; }
</style>"""


def page_renderer(out_html: Path) -> Renderer:
    """A renderer writing into ``<page name>_files/`` beside ``out_html``, emptied first (no stale files)."""
    folder = out_html.parent / f"{out_html.stem}_files"
    if folder.exists():
        shutil.rmtree(folder)
    return Renderer(folder, out_html.parent)


def write_page(path: Path, title: str, sections: Sequence[str]) -> Path:
    """Write a page (atomically) from HTML sections."""
    with atomic_path(path, ".html") as tmp:
        tmp.write_text(page(title, EXTRA_STYLE + "\n" + "\n".join(sections)))
    return path


def _sample(n: int, count: int, seed: int) -> list[int]:
    """``count`` distinct rows of ``n``, fixed by ``seed`` (sorted, so the page reads in order)."""
    return sorted(np.random.default_rng(seed).choice(n, size=min(count, n), replace=False).tolist()) if n else []


def _resolve(resolve, table, row: int, column: str = "path"):
    if column not in table.columns:
        return None
    return resolve(table[column].iloc[row])


#: the class columns an evaluation table may have (the demo world's; the benchmarks' ceilings use them)
CLASS_COLUMNS = ("concept", "size", "condition")


def describe(table, row: int, path: Any, names: Mapping[str, Mapping[int, str]] | None = None,
             columns: Sequence[str] = CLASS_COLUMNS) -> tuple[str, list[str]]:
    """How a page names an item: its file name (else its pair id or row), and a line with its class in words
    (``names[column]`` maps a column's values to words, e.g. :func:`cmcr.world.class_names`; a value without a
    word shows as ``column value``) for those of ``columns`` the table has — a point cloud is described by its
    concept only, as a shape shows neither size nor condition."""
    if path is not None:
        name = Path(str(getattr(path, "path", path))).name
    elif "pair_id" in table.columns:
        name = f"pair {table['pair_id'].iloc[row]}"
    else:
        name = f"row {row}"
    detail = []
    for column in columns:
        if column in table.columns:
            value = table[column].iloc[row]
            words = (names or {}).get(column) or {}
            word = words.get(value) if not isinstance(value, str) else None  # an index (int, numpy int) has a word
            detail.append(str(word) if word is not None else f"{column} {value}")
    return name, [" · ".join(detail)] if detail else []


def retrieval_section(data, embed, renderer: Renderer, resolve, *, count: int = 3, k: int = 5, seed: int = 0,
                      dataset: str = "", names: Mapping[str, Mapping[int, str]] | None = None) -> str:
    """A→I and I→A: sampled queries and their top-k with scores; a hit is the query's pair (✓ exact pair) or of
    its class — concept, size and condition, which the benchmark cannot tell apart (✓ same class) — or neither."""
    with torch.no_grad():
        a, i = embed["clap"](data.sets["audio"].x, modality="audio"), embed["clip"](data.sets["image"].x, modality="image")
    return (f"<h2>Audio–image retrieval ({html.escape(dataset)})</h2><p class='small'>✓ exact pair: the query's own "
            "pair; ✓ same class: another item of its concept, size and condition (the benchmark's classes: right too, "
            "as its ceiling counts)</p>") + _retrieval_rows(
        (a, data.sets["audio"].table, "audio", "A"), (i, data.sets["image"].table, "image", "I"), renderer, resolve,
        count=count, k=k, seed=seed, dataset=dataset, names=names, relevant=CLASS_COLUMNS)


def _retrieval_rows(first, second, renderer: Renderer, resolve, *, count: int, k: int, seed: int, dataset: str,
                    names: Mapping[str, Mapping[int, str]] | None, relevant: Sequence[str], both: bool = True,
                    described: Mapping[str, Sequence[str]] | None = None) -> str:
    """Between two paired sets ``(embeddings, table, modality, letter)``, first → second (and back when ``both``):
    sampled queries and their top-k with scores. A hit is the query's pair (``pair_id``: ✓ exact pair), else right
    too when it shares the query's ``relevant`` class columns (✓ same concept / same class), else ✗; each query's
    header says how many of its top k are right and where its own pair ranks. ``described[modality]``: the class
    columns shown under that modality's items (default all)."""
    kind = "concept" if tuple(relevant) == ("concept",) else "class"
    html_rows = []
    for (queries, q_table, q_mod, q_letter), (gallery, g_table, g_mod, g_letter) in ((first, second), (second, first))[:2 if both else 1]:
        usable = [c for c in relevant if c in q_table.columns and c in g_table.columns]
        for q in _sample(len(queries), count, seed):
            scores = (queries[q:q + 1] @ gallery.T)[0]
            top = torch.topk(scores, min(k, len(gallery)))
            q_path = _resolve(resolve, q_table, q)
            q_name, q_detail = describe(q_table, q, q_path, names, (described or {}).get(q_mod, CLASS_COLUMNS))
            query = (renderer.tile(q_mod, q_path, f"query: {q_name}", extra=q_detail) if q_path
                     else Tile(caption=f"query: {q_name} (no path column)", extra=q_detail))
            hits, right = [], 0
            for rank, (score, g) in enumerate(zip(top.values.tolist(), top.indices.tolist()), 1):
                g_path = _resolve(resolve, g_table, g)
                exact = bool(g_table["pair_id"].iloc[g] == q_table["pair_id"].iloc[q])
                same = bool(usable) and all(g_table[c].iloc[g] == q_table[c].iloc[q] for c in usable)
                correct = True if exact else (kind if same else False)
                right += exact or same
                g_name, g_detail = describe(g_table, g, g_path, names, (described or {}).get(g_mod, CLASS_COLUMNS))
                caption = f"#{rank}  {score:.3f}  {g_name}"
                hits.append(renderer.tile(g_mod, g_path, caption, correct, extra=g_detail) if g_path
                            else Tile(caption=caption, correct=correct, extra=g_detail))
            own = (g_table["pair_id"] == q_table["pair_id"].iloc[q]).to_numpy().nonzero()[0]
            true_rank = int((scores > scores[int(own[0])]).sum()) + 1 if len(own) else None
            shared = (f"{right} of the top {len(hits)} share its {kind}" if usable else
                      f"{right} of the top {len(hits)} are its pair")
            where = f"its own pair ranks #{true_rank} of {len(gallery)}" if true_rank else "its pair is not in the gallery"
            html_rows.append(row(f"{q_letter}→{g_letter} {dataset}: {shared}; {where}", query, hits))
    return "".join(html_rows)


def graph_section(embeddings: str | Path, graph_checkpoint: str | Path, dataset: str, renderer: Renderer, resolve, *,
                  count: int = 3, k: int = 5, seed: int = 0, names: Mapping[str, Mapping[int, str]] | None = None,
                  trust_pickle: bool = False) -> str:
    """Audio→3D in a graph's unified space (the emergent pair: no link trains it): sampled sounds and the point
    clouds they retrieve (rendered); a shape of the sound's concept is right too (the benchmark's class)."""
    result = load_unit(graph_checkpoint)
    title = f"<h2>Audio–3D retrieval in the unified space of graph {html.escape(result.graph.name)} ({html.escape(dataset)})</h2>"
    _, (_, audio_space, _), (_, points_space, _), _ = GRAPH_TASKS["audio_points"]
    owners = result.graph.modalities()
    if owners.get("audio") != audio_space or owners.get("points") != points_space:
        return title + "<p class='small'>not shown: the graph does not embed audio and point clouds</p>"
    try:
        sets = load_task(embeddings, "audio_points", dataset)[0].sets  # the benchmark's pairs, joined by pair_id
    except (ArtifactError, FileNotFoundError) as exc:
        return title + f"<p class='small'>not shown: {html.escape(str(exc))}</p>"
    (a, ta), (p, tp) = ((sets[m].x, sets[m].table) for m in ("audio", "points"))
    embed = result.embedders()
    with torch.no_grad():
        a, p = embed[audio_space](a, modality="audio"), embed[points_space](p, modality="points")
    renderer.trust_pickle = trust_pickle
    return title + ("<p class='small'>Sounds retrieving point clouds. A sound and a point cloud share only the concept "
                    "(a shape shows neither size nor condition): ✓ exact pair marks the sound's own point cloud, "
                    "✓ same concept a shape of its concept — right too, as the benchmark's ceiling counts it.</p>") + \
        _retrieval_rows((a, ta, "audio", "A"), (p, tp, "points", "3D"), renderer, resolve, count=count, k=k, seed=seed,
                        dataset=dataset, names=names, relevant=("concept",), both=False,
                        described={"points": ("concept",)})


def localization_section(data, embed, renderer: Renderer, scene_images: dict[str, Any], *, count: int = 4,
                         seed: int = 0, dataset: str = "") -> str:
    """Scenes whose sound source is visible: ground-truth box (green) and the proposal chosen (red)."""
    if not scene_images:
        return (f"<h2>Localization ({html.escape(dataset)})</h2><p class='small'>not shown: the scenes' image "
                "files are not known for this dataset</p>")
    with torch.no_grad():
        scored = score_scenes(embed["clip"](data.sets["proposals"].x, modality="image"), data.sets["proposals"].table,
                              embed["clap"](data.sets["audio"].x, modality="audio"), data.sets["audio"].table)
    audio_t, proposals = data.sets["audio"].table, data.sets["proposals"].table
    tiles = []
    for r in _sample(len(audio_t), count, seed):
        scene = str(audio_t["scene_id"].iloc[r])
        chosen = scored[scored["scene_id"] == scene].iloc[0]
        best = proposals.iloc[int(chosen["proposal"])]  # a row of the proposal table
        boxes = [(box, "#1a7f37") for box in audio_t["gt_boxes"].iloc[r]] + [
            ((best.x1, best.y1, best.x2, best.y2), "#d92d20")]
        image = scene_images.get(scene)
        tiles.append(renderer.tile("image", image, f"{scene}: IoU {chosen['iou']:.2f}", bool(chosen["iou"] > 0.5),
                                   [f"score {chosen['confidence']:.3f}"], boxes=boxes)
                     if image is not None else Tile(caption=f"{scene}: no image file"))
    return (f"<h2>Audio-visual source localization ({html.escape(dataset)})</h2><p class='small'>green: ground "
            "truth; red: the proposal most similar to the sound; ✓ when IoU &gt; 0.5</p>"
            + '<div class="row">' + "".join(t.html() for t in tiles) + "</div>")


def zeroshot_section(data, embed, renderer: Renderer, resolve, *, count: int = 6, k: int = 3, seed: int = 0,
                     dataset: str = "", trust_pickle: bool = False) -> str:
    """Point clouds with their top-k classes (class embedding = mean of its prompts, as the evaluation)."""
    prompts_t, points_t = data.sets["prompts"].table, data.sets["points"].table
    labels = torch.tensor(prompts_t["label"].to_numpy())
    names = (prompts_t.drop_duplicates("label").set_index("label")["name"].to_dict() if "name" in prompts_t
             else {int(x): str(x) for x in labels.unique().tolist()})
    with torch.no_grad():
        classes = class_embeddings(embed["clip"](data.sets["prompts"].x, modality="text"), labels, int(labels.max()) + 1)
        x = embed["ulip"](data.sets["points"].x, modality="points")
    tiles = []
    for r in _sample(len(x), count, seed):
        scores = (x[r:r + 1] @ classes.T)[0]
        top = torch.topk(scores, min(k, len(classes)))
        truth = int(points_t["concept"].iloc[r])
        lines = [f"#{j} {names.get(int(c), c)} {s:.3f}" for j, (s, c) in enumerate(zip(top.values.tolist(),
                                                                                       top.indices.tolist()), 1)]
        path = _resolve(resolve, points_t, r)
        caption = f"true: {names.get(truth, truth)}"
        correct = int(top.indices[0]) == truth
        tiles.append(renderer.tile("points", path, caption, correct, lines, trust_pickle=trust_pickle) if path
                     else Tile(caption=caption, correct=correct, extra=lines))
    return (f"<h2>Zero-shot 3D classification ({html.escape(dataset)})</h2><p class='small'>top-{k} classes; ✓ when "
            "the first is right</p>" + '<div class="row">' + "".join(t.html() for t in tiles) + "</div>")


def write_examples(out_html: str | Path, embeddings: str | Path, checkpoints: dict[str, str | Path],
                   benchmarks: dict[str, list[str]], resolve, scene_images=None, *, seed: int = 0,
                   trust_pickle: bool = False, names: Mapping[str, Mapping[int, str]] | None = None,
                   graphs: Mapping[str, str | Path] | None = None) -> Path:
    """``results/examples.html``: for the first dataset of each benchmark, a seeded sample of queries with
    what the connected space returns (model: ``checkpoints[connection]``). Renderings go to
    ``<page name>_files/`` beside the page. ``resolve(path)`` maps a table's path to a file;
    ``scene_images(dataset)`` gives ``{scene_id: image file}`` for localization (or None); ``names`` gives words
    for the class columns' indices (``{column: {index: word}}``, the demo world's :func:`cmcr.world.class_names`); ``graphs`` (``{name:
    checkpoint}``) adds audio↔3D in each graph's unified space on the first dataset of ``benchmarks["graph"]``."""
    out_html = Path(out_html)
    renderer = page_renderer(out_html)
    sections = [f"<p class='small'>Seeded sample (seed {seed}) of evaluation queries; models: "
                + ", ".join(f"{html.escape(c)} = <code>{html.escape(Path(p).name)}</code>" for c, p in checkpoints.items())
                + ". Scores are cosine similarities in the connected space.</p>"]
    embeds = {}
    for connection, path in checkpoints.items():
        projectors = load_unit(path).projectors
        embeds[connection] = {s: projectors[s].embed for s in projectors}
    for benchmark in ("retrieval", "localization", "zeroshot3d"):
        datasets = benchmarks.get(benchmark) or []
        connection = BENCHMARKS[benchmark]
        if not datasets or connection not in embeds:
            continue
        dataset = str(datasets[0])
        try:
            data, _ = load_benchmark(embeddings, benchmark, dataset)
        except ArtifactError as exc:
            sections.append(f"<h2>{html.escape(benchmark)} ({html.escape(dataset)})</h2><p class='small'>not shown: "
                            f"{html.escape(str(exc))}</p>")
            continue
        if benchmark == "retrieval":
            sections.append(retrieval_section(data, embeds[connection], renderer, resolve, seed=seed, dataset=dataset,
                                              names=names))
        elif benchmark == "localization":
            images = scene_images(dataset) if scene_images else None
            sections.append(localization_section(data, embeds[connection], renderer, images or {}, seed=seed,
                                                 dataset=dataset))
        else:
            sections.append(zeroshot_section(data, embeds[connection], renderer, resolve, seed=seed, dataset=dataset,
                                             trust_pickle=trust_pickle))
    for name, path in (graphs or {}).items():
        if benchmarks.get("graph"):
            sections.append(graph_section(embeddings, path, str(benchmarks["graph"][0]), renderer, resolve, seed=seed,
                                          names=names, trust_pickle=trust_pickle))
    return write_page(out_html, "C-MCR: qualitative results", sections)


def search_page(out_html: str | Path, query_modality: str, query: Any, results, index_dir: str | Path) -> Path:
    """One query and its search results (``cmcr search --html``): renderings in ``<page name>_files/``."""
    index_info = json.loads((Path(index_dir) / "index.json").read_text())
    out_html = Path(out_html)
    renderer = page_renderer(out_html)
    modality = index_info["model"]["modality"]
    query_tile = renderer.tile(query_modality, query, "query")
    hits = [renderer.tile(modality, item, f"#{rank}  {score:.3f}", extra=[str(item_id)])
            for rank, score, item_id, item in results[["rank", "score", "id", "item"]].itertuples(index=False)]
    model = index_info["model"]
    what = f"graph {model['graph']}" if model.get("graph") else f"connection {model.get('connection')}"
    info = (f"<p class='small'>index of {index_info['rows']} {html.escape(modality)} items; "
            f"{html.escape(what)}; scores are cosine similarities in the connected "
            "space</p>")
    return write_page(out_html, "C-MCR search", [info, row(f"{query_modality} → {modality}", query_tile, hits)])
