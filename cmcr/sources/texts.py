"""Text corpora of §4.1 → one de-duplicated table with a ``source`` column (appendix A's ablation).

| dataset | file (expected layout) | source |
| --- | --- | --- |
| ``coco`` | COCO ``annotations/captions_train2017.json`` (``annotations[].caption``) | image-text |
| ``cc3m`` | CC3M ``Train_GCC-training.tsv`` (caption TAB url, no header); a seeded random subset (1M in the paper) | image-text |
| ``msrvtt`` | MSR-VTT ``train_val_videodatainfo.json`` / ``MSRVTT_data.json`` (``sentences[].caption``) | video-text |
| ``mad`` | MAD ``MAD_train.json`` (``{id: {"sentence": ...}}``) | video-text |
| ``audiocaps`` | AudioCaps ``train.csv`` (column ``caption``) | audio-text |
| ``clotho`` | Clotho ``clotho_captions_development.csv`` (columns ``caption_1`` … ``caption_5``) | audio-text |

Texts are whitespace-normalised and de-duplicated case-insensitively, keeping the first occurrence in
the order of the table above. The paper's counts after this: image-text 1.66M, video-text 0.58M,
audio-text 77K (2.33M in all).

Texts are stored as the corpora give them. Some carry HTML entities (``&amp;``, ``&#39;`` in COCO and
CC3M captions): CLIP's tokenizer in cmcr (open_clip's, OpenAI CLIP's) unescapes them, the official C-MCR
inference's HF ``CLIPTokenizerFast`` does not (README, "Where the paper and the official code
disagree"), so the log counts them per corpus (:func:`count_html_entities`).
"""

from __future__ import annotations

import html
import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from cmcr.artifacts import ArtifactError

log = logging.getLogger(__name__)

#: the three kinds of text corpora of §4.1 (appendix A's ablation drops one at a time)
SOURCES = ("image-text", "video-text", "audio-text")
SOURCE_OF = {"coco": "image-text", "cc3m": "image-text", "msrvtt": "video-text", "mad": "video-text",
             "audiocaps": "audio-text", "clotho": "audio-text"}
_SPACES = re.compile(r"\s+")


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc})") from exc


def read_dataset(name: str, path: str | Path, *, cc3m_subset: int | None = None, seed: int = 0) -> list[str]:
    """The raw captions of one dataset file."""
    path = Path(path)
    if name not in SOURCE_OF:
        raise ArtifactError(f"unknown text dataset {name!r}; known: {sorted(SOURCE_OF)}")
    if not path.is_file():
        raise ArtifactError(f"{name} captions not found: {path}")
    try:
        if name == "coco":
            texts = [a["caption"] for a in _json(path)["annotations"]]
        elif name == "cc3m":
            table = pd.read_csv(path, sep="\t", header=None, names=["caption", "url"], quoting=3, dtype=str,
                                keep_default_na=False)
            texts = table["caption"].tolist()
            if cc3m_subset is not None and len(texts) > cc3m_subset:  # "randomly selected one million"
                keep = np.sort(np.random.default_rng(seed).choice(len(texts), cc3m_subset, replace=False))
                texts = [texts[i] for i in keep]
        elif name == "msrvtt":
            texts = [s["caption"] for s in _json(path)["sentences"]]
        elif name == "mad":
            texts = [v["sentence"] for v in _json(path).values()]
        elif name == "audiocaps":
            texts = pd.read_csv(path)["caption"].tolist()
        else:
            frame = pd.read_csv(path)
            texts = [t for c in (f"caption_{i}" for i in range(1, 6)) for t in frame[c].tolist()]
    except (KeyError, TypeError) as exc:
        raise ArtifactError(f"{path}: does not look like {name} captions (missing {exc})") from exc
    return [str(t) for t in texts]


def count_html_entities(texts: list[str]) -> tuple[int, str | None]:
    """How many texts hold an HTML entity (text that ``html.unescape`` changes, what open_clip's tokenizer
    undoes and HF's does not), and the first such text."""
    hits = [t for t in texts if "&" in t and html.unescape(t) != t]
    return len(hits), (hits[0] if hits else None)


def normalise(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def collect_texts(files: Mapping[str, str | Path], *, cc3m_subset: int | None = 1_000_000, seed: int = 0) -> pd.DataFrame:
    """All datasets in ``files`` (name → path) → ``text_id, text, source, dataset``, de-duplicated."""
    frames = []
    for name in SOURCE_OF:  # fixed order: the first occurrence of a duplicate wins
        if name not in files:
            continue
        texts = [normalise(t) for t in read_dataset(name, files[name], cc3m_subset=cc3m_subset, seed=seed)]
        frames.append(pd.DataFrame({"text": texts, "source": SOURCE_OF[name], "dataset": name}))
        entities, example = count_html_entities(texts)
        log.info("%s: %d captions from %s; %d with HTML entities%s", name, len(texts), files[name], entities,
                 f" (e.g. {example[:80]!r}: unescaped by cmcr's CLIP tokenizer, not by the official HF one)"
                 if entities else "")
    unknown = set(files) - set(SOURCE_OF)
    if unknown:
        raise ArtifactError(f"unknown text dataset(s) {sorted(unknown)}; known: {sorted(SOURCE_OF)}")
    if not frames:
        raise ArtifactError("no text datasets given")
    table = pd.concat(frames, ignore_index=True)
    table = table[table["text"] != ""]
    before = len(table)
    table = table.loc[~table["text"].str.lower().duplicated()].reset_index(drop=True)
    log.info("%d texts after removing %d duplicates: %s", len(table), before - len(table),
             table["source"].value_counts().to_dict())
    return table.assign(text_id=np.arange(len(table)))[["text_id", "text", "source", "dataset"]]
