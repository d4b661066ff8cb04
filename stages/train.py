"""Stage `train@<variant>-<seed>`: train one connection's projectors (Table 5 row, σ² point, text-source
subset, 3D) with one training seed (``seeds`` in params.yaml: initialisation, shuffling, Eq. 3 noise).

Reads the variant's effective config from ``data/params/<variant>.json`` (written by the validate stage),
not from params.yaml: a change of params that leaves this variant's config as it was does not retrain it,
and adding a seed trains only that seed. Writes ``models/connections/<variant>/seed<seed>.pt``.
"""

import dataclasses
import json

from common import AGGREGATED, CONNECTIONS, EMBEDDINGS, HISTORY, PARAMS_DIR, ROOT, run, setup_logging
from cmcr.artifacts import ArtifactError, save_torch, write_json
from cmcr.experiments import checkpoint_path, variant_from_spec
from cmcr.official import load_official
from cmcr.train import ConnectionData, load_true_pairs, train_connection, train_paired


def main(variant: str, seed: int) -> None:
    log = setup_logging(f"train@{variant}-{seed}")
    spec_file = PARAMS_DIR / f"{variant}.json"
    if not spec_file.is_file():
        known = sorted(p.stem for p in PARAMS_DIR.glob("*.json"))
        raise ArtifactError(f"{spec_file}: no such variant's config (unknown variant {variant!r}; "
                            f"params.yaml variants are: {', '.join(known) or 'none'}; run the validate stage first)")
    v = variant_from_spec(json.loads(spec_file.read_text()))
    log.info("config from %s, seed %d", spec_file, seed)
    checkpoint, history = checkpoint_path(CONNECTIONS, variant, seed), checkpoint_path(HISTORY, variant, seed, ".json")
    if v.official:  # the released projectors, evaluated by the same code as ours
        result = load_official(ROOT / v.official["checkpoint"], v.official["release"])
        log.info("imported the official %s release from %s", v.official["release"], v.official["checkpoint"])
    else:
        config = dataclasses.replace(v.config, train=dataclasses.replace(v.config.train, seed=seed))
        if v.paired:  # the paired-data reference: the same projectors trained on true pairs (never C-MCR's data)
            result = train_paired(load_true_pairs(EMBEDDINGS, config.connection.name, v.paired), config)
        else:
            data = ConnectionData.from_pipeline(EMBEDDINGS, AGGREGATED / config.memory.mode, config, v.exclude_sources)
            result = train_connection(data, config)
    save_torch(checkpoint, result.checkpoint())
    write_json(history, result.history)


if __name__ == "__main__":
    run(main)
