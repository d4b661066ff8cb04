"""Stage `spaces@<space>`: train a demo stand-in contrastive space on its paired world data."""

import pandas as pd

from common import METRICS, SPACES, TEXTS, WORLD, params, setup_logging, run
from cmcr.artifacts import save_torch, write_json
from cmcr.encoders.demo import DEMO_SPACES, tokenize, train_demo_space
from cmcr.experiments import setup_of
from cmcr.extraction import extract
from cmcr.metrics.spaces import space_statistics
from cmcr.world import WorldFiles


def main(space: str) -> None:
    log = setup_logging(f"spaces@{space}")
    p = params()
    out, metrics = SPACES / f"{space}.pt", METRICS / "spaces" / f"{space}.json"
    if setup_of(p) != "demo":
        save_torch(out, {"format": "skipped", "reason": f"setup={setup_of(p)}"})
        write_json(metrics, {"skipped": True})
        return
    world = WorldFiles(WORLD)
    first, second = DEMO_SPACES[space]
    pairs = world.pairs(space, (first, second))
    log.info("training demo %s on %d %s–%s pairs", space, len(pairs[first]), first, second)
    cfg = p["demo"]["spaces"]
    model, history = train_demo_space(space, pairs, vocab=sorted({t for text in world.captions() for t in tokenize(text)}), dim=cfg["dim"], epochs=cfg["epochs"],
                                      batch_size=cfg["batch_size"], lr=cfg["lr"], seed=cfg["seed"])
    save_torch(out, model.checkpoint(history))
    # The stand-in's geometry (cmcr/metrics/spaces.py): gap and cones on unpaired items (held-out memory
    # items, C-MCR's texts), paired cosine on 1,000 of its own training pairs — as measured for real MCRs.
    def emb(modality):
        if modality == "text":
            return extract(model, "text", list(pd.read_parquet(TEXTS)["text"])[:2000], progress=False).embeddings
        return extract(model, modality, world.memory_items(modality, 2000), progress=False).embeddings

    def paired(modality):
        return extract(model, modality, pairs[modality][:1000], progress=False).embeddings

    stats = space_statistics(first, second, emb(first), emb(second), paired(first), paired(second))
    write_json(metrics, {"final_loss": history[-1]["loss"], "temperature": history[-1]["temperature"], **stats})
    log.info("demo %s: final loss %.3f, %s", space, history[-1]["loss"],
             ", ".join(f"{k} {v:.3f}" for k, v in stats.items()))


if __name__ == "__main__":
    run(main)
