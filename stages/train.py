"""Stage `train@<variant>`: train one connection's projectors (Table 5 row, σ² point, text-source subset, 3D)."""

import numpy as np

from common import AGGREGATED, CONNECTIONS, EMBEDDINGS, HISTORY, ROOT, params, run, setup_logging
from cmcr.artifacts import ArtifactError, load_npy, read_parquet, save_torch, write_json
from cmcr.experiments import resolve_variant
from cmcr.official import load_official
from cmcr.pairing import align_by_id
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
    tables = {s: read_parquet(EMBEDDINGS / f"{src}.parquet", rows=shared[s].shape[0]) for s, (src, _) in inputs.items()}
    first, second = config.connection.spaces
    # the two spaces' shared items are paired by id, not row: an item one space failed to load drops out of both
    try:
        rows, key = align_by_id(tables, config.connection.shared_modality,
                                f"{inputs[first][0]} and {inputs[second][0]}")
    except ValueError as exc:
        raise ArtifactError(str(exc)) from None
    if rows is not None:
        log.warning("%s: %d items in both spaces (%s), %s: %d, %s: %d — pairs joined by %s", config.connection.name,
                    len(rows[first]), config.connection.shared_modality, first, len(tables[first]), second,
                    len(tables[second]), key)
        shared = {s: np.asarray(x[rows[s]]) for s, x in shared.items()}  # Eq. 2 row i belongs to shared row i
        memory = {s: np.asarray(x[rows[s]]) for s, x in memory.items()}
        tables = {s: t.iloc[rows[s]].reset_index(drop=True) for s, t in tables.items()}
    if v.exclude_sources:  # appendix A: drop texts of some sources (Eq. 2 is per text, so rows just go)
        if "source" not in tables[first]:
            raise ArtifactError(f"{inputs[first][0]}.parquet has no 'source' column: exclude_sources needs it")
        keep = np.flatnonzero(~tables[first]["source"].isin(v.exclude_sources).to_numpy())
        log.info("excluding %s: %d of %d texts kept", list(v.exclude_sources), len(keep), len(tables[first]))
        shared = {s: np.asarray(x[keep]) for s, x in shared.items()}
        memory = {s: np.asarray(x[keep]) for s, x in memory.items()}
    result = train_connection(ConnectionData(shared=shared, memory=memory), config)
    save_torch(CONNECTIONS / f"{variant}.pt", result.checkpoint())
    write_json(HISTORY / f"{variant}.json", result.history)


if __name__ == "__main__":
    run(main)
