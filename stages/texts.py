"""Stage `texts`: collect the C-MCR text set (text_id, text, source)."""

from common import BYO, TEXTS, WORLD, stage_params, setup_logging, run
from cmcr.artifacts import read_parquet, write_parquet
from cmcr.experiments import setup_of
from cmcr.sources.texts import collect_texts
from cmcr.world import WorldFiles


def main() -> None:
    log = setup_logging("texts")
    p = stage_params("texts")  # setup and its own keys only (data/params/stages/texts.json)
    if setup_of(p) == "demo":
        texts = WorldFiles(WORLD).corpus()
    elif setup_of(p) == "paper":  # the §4.1 corpora from the user's disk
        cfg = p["paper"]["texts"]
        files = {k: v for k, v in cfg["files"].items() if v}
        texts = collect_texts(files, cc3m_subset=cfg["cc3m_subset"], seed=cfg["seed"])
    else:  # byo: the texts table that describes the user's text embeddings
        texts = read_parquet(BYO / "clip" / "text.parquet", columns=["text_id", "source"])
    # Demo captions repeat (few templates): repeats are kept, as frequency is part of the corpus.
    write_parquet(TEXTS, texts)
    log.info("%d texts by source: %s", len(texts), texts["source"].value_counts().to_dict())


if __name__ == "__main__":
    run(main)
