"""Stage `train@<variant>`: train one connection's projectors (Table 5 row, σ² point, text-source subset, 3D,
paired-data reference) once per training seed (``seeds`` in params.yaml: initialisation, shuffling, Eq. 3
noise), the seeds side by side in threads of this one process (:func:`cmcr.train.train_seeds`: each training
computes single-threaded, so its bytes do not depend on the others; one process start per variant).

Reads the variant's effective config from ``data/params/<variant>.json`` (written by the validate stage),
not from params.yaml: a change of params that leaves this variant's config as it was does not retrain it.
Writes ``models/connections/<variant>/seed<seed>.pt`` and ``models/history/<variant>/seed<seed>.json``.
"""

from common import AGGREGATED, CONNECTIONS, EMBEDDINGS, HISTORY, PARAMS_DIR, ROOT, params, run, setup_logging

import json

from cmcr.artifacts import ArtifactError, save_torch, write_json
from cmcr.experiments import checkpoint_path, seeds_of, variant_from_spec
from cmcr.norms import calibrate_all, link_sets
from cmcr.official import load_official
from cmcr.train import ConnectionData, load_true_pairs, train_connection, train_paired, train_seeds


def main(variant: str) -> None:
    spec_file = PARAMS_DIR / f"{variant}.json"
    if not spec_file.is_file():  # before any log line: a bad argument is one line
        known = sorted(p.stem for p in PARAMS_DIR.glob("*.json"))
        raise ArtifactError(f"{spec_file}: no such variant's config (unknown variant {variant!r}; "
                            f"params.yaml variants are: {', '.join(known) or 'none'}; run the validate stage first)")
    log = setup_logging(f"train@{variant}")
    v = variant_from_spec(json.loads(spec_file.read_text()))
    seeds = seeds_of(params())
    log.info("config from %s, seeds %s", spec_file, seeds)
    if v.official:  # the released projectors, evaluated by the same code as ours (one file: the same for every seed)
        result = load_official(ROOT / v.official["checkpoint"], v.official["release"])
        log.info("imported the official %s release from %s", v.official["release"], v.official["checkpoint"])
        results = {seed: result for seed in seeds}
    elif v.paired:  # the paired-data reference: the same projectors trained on true pairs (never C-MCR's data)
        pairs = load_true_pairs(EMBEDDINGS, v.config.connection.name, v.paired)
        results = train_seeds(lambda seed: train_paired(pairs, v.config.with_seed(seed), progress=False), seeds)
    else:
        data = ConnectionData.from_pipeline(EMBEDDINGS, AGGREGATED / v.config.memory.mode, v.config, v.exclude_sources)
        results = train_seeds(lambda seed: train_connection(data, v.config.with_seed(seed), progress=False), seeds)
    if v.config.projector.norm_stats == "modality" and not v.official:  # cmcr.norms: each modality its own statistics
        conn = v.config.connection
        if v.paired:  # the true pairs are the raw sets of their two modalities
            sets = {s: {conn.memory_modality[s]: pairs[s]} for s in conn.spaces}
        else:  # the memory sets as they are, and the texts (or images) this variant trained on
            sets = link_sets(EMBEDDINGS, [conn])
            for s in conn.spaces:
                sets[s][conn.shared_modality] = data.shared[s]
        for seed, result in results.items():
            log.info("seed %d: BatchNorm statistics per modality from %s", seed, ", ".join(calibrate_all(result.projectors, sets)))
    for seed, result in results.items():
        save_torch(checkpoint_path(CONNECTIONS, variant, seed), result.checkpoint())
        write_json(checkpoint_path(HISTORY, variant, seed, ".json"), result.history)
        if result.history:
            log.info("seed %d: final loss %.4f", seed, result.history[-1]["loss"])


if __name__ == "__main__":
    run(main)
