"""Stage `train@<variant>`: train one connection's projectors (Table 5 row, σ² point, text-source subset, 3D)."""

import numpy as np

from common import AGGREGATED, CONNECTIONS, EMBEDDINGS, HISTORY, ROOT, TEXTS, params, run, setup_logging
from cmcr.artifacts import load_npy, read_parquet, save_torch, write_json
from cmcr.experiments import resolve_variant
from cmcr.official import load_official
from cmcr.train import ConnectionData, train_connection

def main(variant: str) -> None:
    log = setup_logging(f"train@{variant}")
    v = resolve_variant(params(), variant)
    if v.official:  # the released projectors, evaluated by the same code as ours
        result = load_official(ROOT / v.official["checkpoint"], v.official["release"])
        log.info("imported the official %s release from %s", v.official["release"], v.official["checkpoint"])
        save_torch(CONNECTIONS / f"{variant}.pt", result.checkpoint())
        write_json(HISTORY / f"{variant}.json", [])
        return
    config = v.config
    inputs = config.connection.training_inputs()  # per space: (shared-modality set, Eq. 2 aggregate)
    shared = {s: load_npy(EMBEDDINGS / f"{src}.npy") for s, (src, _) in inputs.items()}
    memory = {s: load_npy(AGGREGATED / config.memory.mode / f"{agg}.npy") for s, (_, agg) in inputs.items()}
    if v.exclude_sources:  # appendix A: drop texts of some sources (Eq. 2 is per text, so rows just go)
        texts = read_parquet(TEXTS, rows=next(iter(shared.values())).shape[0], columns=["source"])
        keep = np.flatnonzero(~texts["source"].isin(v.exclude_sources).to_numpy())
        log.info("excluding %s: %d of %d texts kept", list(v.exclude_sources), len(keep), len(texts))
        shared = {s: np.asarray(x[keep]) for s, x in shared.items()}
        memory = {s: np.asarray(x[keep]) for s, x in memory.items()}
    result = train_connection(ConnectionData(shared=shared, memory=memory), config)
    save_torch(CONNECTIONS / f"{variant}.pt", result.checkpoint())
    write_json(HISTORY / f"{variant}.json", result.history)


if __name__ == "__main__":
    run(main)
