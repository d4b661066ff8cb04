"""Stage `spaces`: train the demo stand-in contrastive spaces (params ``spaces``: CLIP, CLAP, ULIP-2) on their paired
world data, each shaped to the real model's published geometry where one is known (`demo.spaces.geometry:
published`, cmcr/encoders/geometry.py). One process: the stand-ins train side by side in threads, all at once (one
intra-op thread each, :func:`cmcr.train.train_seeds`), so each computes exactly what it computes alone and the stage
takes about as long as the slowest (ULIP-2's). ``python stages/spaces.py clip`` trains the spaces named only.
Other setups write a SKIPPED marker per space."""

from common import METRICS, SPACES, TEXTS, WORLD, stage_params, setup_logging, run

import logging

import numpy as np
import pandas as pd
import torch
import typer

from cmcr.artifacts import save_torch, write_json
from cmcr.config import ConfigError
from cmcr.encoders.demo import DEMO_SPACES, tokenize, train_demo_space
from cmcr.encoders.geometry import centre, fit_geometry, geometry_basis, training_temperature
from cmcr.experiments import pipeline_spaces, setup_of
from cmcr.extraction import extract
from cmcr.metrics.spaces import PUBLISHED, shape_targets, space_statistics
from cmcr.train import train_seeds
from cmcr.world import WorldFiles

log = logging.getLogger("spaces")


def main(spaces: list[str] = typer.Argument(None, help="the spaces to train (default: params.yaml spaces)")) -> None:
    setup_logging("spaces")
    p = stage_params("spaces")  # setup and its own keys only (data/params/stages/spaces.json)
    spaces = list(spaces or pipeline_spaces(p))
    if setup_of(p) != "demo":
        for space in spaces:
            save_torch(SPACES / f"{space}.pt", {"format": "skipped", "reason": f"setup={setup_of(p)}"})
            write_json(METRICS / "spaces" / f"{space}.json", {"skipped": True})
        return
    unknown = [s for s in spaces if s not in DEMO_SPACES]
    if unknown:
        raise ConfigError(f"setup demo has stand-ins for {', '.join(DEMO_SPACES)} only, not {', '.join(unknown)} "
                          "(a space of your own runs in setup paper or byo)")
    # all at once: three single-threaded trainings share the cores (the stage takes ULIP-2's time, not the sum), and
    # each computes what it computes alone (one intra-op thread; tested byte for byte)
    train_seeds(lambda i: stand_in(spaces[i], p), range(len(spaces)), workers=len(spaces),
                names=[f"stand-in {s}" for s in spaces])


def stand_in(space: str, p: dict) -> None:
    """Train, shape and measure one stand-in; write ``models/spaces/<space>.pt`` and ``metrics/spaces/<space>.json``."""
    out, metrics = SPACES / f"{space}.pt", METRICS / "spaces" / f"{space}.json"
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
    # Each set is extracted once; a shaped space's offsets are fitted on the unit embeddings, which are then
    # shaped exactly as the space's encoders shape them (DemoSpaceModel.shape_output).
    texts = list(pd.read_parquet(TEXTS)["text"])[:2000]
    unpaired = {m: extract(model, m, texts if m == "text" else world.memory_items(m, 2000), progress=False).embeddings
                for m in (first, second)}
    paired = {m: extract(model, m, pairs[m][:1000], progress=False).embeddings for m in (first, second)}

    record = {"geometry_mode": "shaped" if targets is not None else "learned"}
    scale = 1.0
    if targets is not None:  # centre each modality, fit the offsets, then measure the shaped space
        units = {m: torch.as_tensor(np.asarray(x)) for m, x in unpaired.items()}
        centres = torch.stack([units[m].mean(0) for m in (first, second)])
        geometry = fit_geometry(*(centre(units[m], c).numpy() for m, c in zip((first, second), centres)),
                                cone_first=targets["cone_first"], cone_second=targets["cone_second"],
                                gap=targets["modality_gap"])
        model.model.set_geometry(basis, geometry, centres)
        scale = geometry.scale()
        record["geometry"] = geometry.as_dict()
        record["training_temperature"] = temperature
        with torch.no_grad():
            unpaired, paired = ({m: model.model.shape_output(m, torch.as_tensor(np.asarray(x))).numpy()
                                 for m, x in sets.items()} for sets in (unpaired, paired))
    save_torch(out, model.checkpoint(history))
    stats = space_statistics(first, second, unpaired[first], unpaired[second], paired[first], paired[second])
    record |= {"final_loss": history[-1]["loss"], "temperature": history[-1]["temperature"] / scale, **stats}
    record["published"] = PUBLISHED[space]  # the real model's values, with their sources
    write_json(metrics, record)
    log.info("demo %s: final loss %.3f, temperature %.4f, %s", space, history[-1]["loss"], record["temperature"],
             ", ".join(f"{k} {v:.3f}" for k, v in stats.items()))


if __name__ == "__main__":
    run(main)
