"""Text corpora readers: each documented layout, the seeded CC3M subset, de-duplication, sources."""

import json

import pandas as pd
import pytest

from cmcr.artifacts import ArtifactError
from cmcr.sources.texts import collect_texts, read_dataset


@pytest.fixture
def corpora(tmp_path):
    (tmp_path / "coco.json").write_text(json.dumps({"annotations": [{"caption": "A dog  runs."}, {"caption": "a cat"}]}))
    (tmp_path / "cc3m.tsv").write_text("".join(f"caption number {i}\thttp://x/{i}\n" for i in range(10)))
    (tmp_path / "msrvtt.json").write_text(json.dumps({"sentences": [{"caption": "a man cooks"}, {"caption": "A cat"}]}))
    (tmp_path / "mad.json").write_text(json.dumps({"1": {"sentence": "she opens the door"}}))
    pd.DataFrame({"audiocap_id": [1, 2], "caption": ["a dog barks", "rain falls"]}).to_csv(tmp_path / "ac.csv", index=False)
    pd.DataFrame({"file_name": ["a.wav"], **{f"caption_{i}": [f"birds sing {i}"] for i in range(1, 6)}}).to_csv(
        tmp_path / "clotho.csv", index=False)
    return {"coco": tmp_path / "coco.json", "cc3m": tmp_path / "cc3m.tsv", "msrvtt": tmp_path / "msrvtt.json",
            "mad": tmp_path / "mad.json", "audiocaps": tmp_path / "ac.csv", "clotho": tmp_path / "clotho.csv"}


def test_collect_all_sources_dedup_and_subset(corpora):
    table = collect_texts(corpora, cc3m_subset=4, seed=0)
    assert table["source"].value_counts().to_dict() == {"image-text": 6, "audio-text": 7, "video-text": 2}
    assert "A dog runs." in table["text"].tolist()  # whitespace normalised
    assert (table["text"].str.lower() == "a cat").sum() == 1  # the MSR-VTT "A cat" duplicate of COCO is dropped
    assert table.loc[table["text"] == "a cat", "dataset"].item() == "coco"  # first occurrence wins
    assert table["text_id"].tolist() == list(range(len(table)))
    again = collect_texts(corpora, cc3m_subset=4, seed=0)
    assert again.equals(table)  # the CC3M subset is seeded
    other = collect_texts(corpora, cc3m_subset=4, seed=1)
    assert set(other[other.dataset == "cc3m"].text) != set(table[table.dataset == "cc3m"].text)


def test_bad_corpus_files(corpora, tmp_path):
    with pytest.raises(ArtifactError, match="coco captions not found"):
        read_dataset("coco", tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text(json.dumps({"images": []}))
    with pytest.raises(ArtifactError, match="does not look like coco captions"):
        read_dataset("coco", tmp_path / "bad.json")
    with pytest.raises(ArtifactError, match="unknown text dataset"):
        collect_texts({"wikipedia": corpora["coco"]})


def test_manifest_of_a_folder(tmp_path):
    from typer.testing import CliRunner

    from cmcr.cli import app

    for name in ("n01/a.JPEG", "n01/b.JPEG", "n02/c.JPEG", "n02/notes.txt"):
        (tmp_path / "train" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "train" / name).write_bytes(b"x")
    res = CliRunner().invoke(app, ["manifest", "--folder", str(tmp_path / "train"), "--pattern", "*.JPEG",
                                   "--out", str(tmp_path / "m.parquet")])
    assert res.exit_code == 0, res.output
    table = pd.read_parquet(tmp_path / "m.parquet")
    assert table["id"].tolist() == ["n01/a.JPEG", "n01/b.JPEG", "n02/c.JPEG"]
    assert table["parent"].tolist() == ["n01", "n01", "n02"]
    res = CliRunner().invoke(app, ["manifest", "--folder", str(tmp_path / "none"), "--out", str(tmp_path / "x.parquet")])
    assert res.exit_code != 0 and "folder not found" in str(res.exception)


def test_html_entities_are_counted_in_the_collection_log(tmp_path, caplog):
    """Issue 23, point 3: COCO and CC3M captions carry HTML entities, which open_clip's tokenizer (cmcr) unescapes
    and the official HF CLIPTokenizerFast does not; the collection log counts them per corpus."""
    import logging

    from cmcr.sources.texts import count_html_entities

    captions = ["Fish &amp; chips", "a man&#39;s bike", "R&B singer", "a dog", "x &lt;3 y", "AT&T logo", "&copy 2009"]
    (tmp_path / "coco.json").write_text(json.dumps({"annotations": [{"caption": c} for c in captions]}))
    (tmp_path / "cc3m.tsv").write_text("plain words\thttp://x/1\nsalt &amp; pepper\thttp://x/2\n")
    # by hand: &amp; &#39; &lt; and &copy (no semicolon, which html.unescape also undoes) count; R&B, AT&T do not
    assert count_html_entities(captions) == (4, "Fish &amp; chips")
    with caplog.at_level(logging.INFO, logger="cmcr.sources.texts"):
        table = collect_texts({"coco": tmp_path / "coco.json", "cc3m": tmp_path / "cc3m.tsv"})
    assert "Fish &amp; chips" in table["text"].tolist()  # stored as given; the tokenizer decides
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("coco: 7 captions from") and "; 4 with HTML entities (e.g. 'Fish &amp; chips'" in line
               for line in lines), lines
    assert any(line.startswith("cc3m: 2 captions from") and "; 1 with HTML entities" in line for line in lines), lines
