"""Stage `spaces@<space>`: train a demo stand-in contrastive space on its paired world data, shaped to the real
model's published geometry where one is known (`demo.spaces.geometry: published`, cmcr/encoders/geometry.py)."""

import pandas as pd
import torch

from common import METRICS, SPACES, TEXTS, WORLD, params, setup_logging, run
from cmcr.artifacts import save_torch, write_json
from cmcr.encoders.demo import DEMO_SPACES, tokenize, train_demo_space
from cmcr.encoders.geometry import centre, fit_geometry, geometry_basis, training_temperature
from cmcr.experiments import setup_of
from cmcr.extraction import extract
from cmcr.metrics.spaces import PUBLISHED, shape_targets, space_statistics
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
    cfg = p["demo"]["spaces"]
    mode = cfg.get("geometry", "published")
    targets = shape_targets(space, first, second) if mode == "published" else None
    temperature = basis = None
    if targets is not None:
        temperature = training_temperature(targets["temperature"], targets["cone_first"], targets["cone_second"])
        basis = geometry_basis(cfg["dim"], cfg["seed"])
        log.info("shaping demo %s to %s: training at tau_u %.4f", space, PUBLISHED[space]["model"], temperature)
    else:
        log.info("demo %s: learned geometry (%s)", space,
                 "no published targets" if mode == "published" else "demo.spaces.geometry=learned")
    log.info("training demo %s on %d %s–%s pairs", space, len(pairs[first]), first, second)
    model, history = train_demo_space(space, pairs, vocab=sorted({t for text in world.captions() for t in tokenize(text)}),
                                      dim=cfg["dim"], epochs=cfg["epochs"], batch_size=cfg["batch_size"], lr=cfg["lr"],
                                      seed=cfg["seed"], temperature=temperature, basis=basis)

    # The stand-in's geometry (cmcr/metrics/spaces.py): gap and cones on unpaired items (held-out memory
    # items, C-MCR's texts), paired cosine on 1,000 of its own training pairs — as measured for real MCRs.
    def emb(modality):
        if modality == "text":
            return extract(model, "text", list(pd.read_parquet(TEXTS)["text"])[:2000], progress=False).embeddings
        return extract(model, modality, world.memory_items(modality, 2000), progress=False).embeddings

    def paired(modality):
        return extract(model, modality, pairs[modality][:1000], progress=False).embeddings

    record = {"geometry_mode": "shaped" if targets is not None else "learned"}
    scale = 1.0
    if targets is not None:  # centre each modality, fit the offsets, then measure the shaped space
        units = [torch.from_numpy(emb(m)) for m in (first, second)]
        centres = torch.stack([u.mean(0) for u in units])
        geometry = fit_geometry(*(centre(u, c).numpy() for u, c in zip(units, centres)), cone_first=targets["cone_first"],
                                cone_second=targets["cone_second"], gap=targets["modality_gap"])
        model.model.set_geometry(basis, geometry, centres)
        scale = geometry.scale()
        record["geometry"] = geometry.as_dict()
        record["training_temperature"] = temperature
    save_torch(out, model.checkpoint(history))
    stats = space_statistics(first, second, emb(first), emb(second), paired(first), paired(second))
    record |= {"final_loss": history[-1]["loss"], "temperature": history[-1]["temperature"] / scale, **stats}
    record["published"] = PUBLISHED[space]  # the real model's values, with their sources
    write_json(metrics, record)
    log.info("demo %s: final loss %.3f, temperature %.4f, %s", space, history[-1]["loss"], record["temperature"],
             ", ".join(f"{k} {v:.3f}" for k, v in stats.items()))


if __name__ == "__main__":
    run(main)
