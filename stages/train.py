"""Stage `train@<variant>`: train one connection's projectors (Table 5 row, σ² point, text-source subset, 3D,
paired-data reference) once per training seed (``seeds`` in params.yaml: initialisation, shuffling, Eq. 3
noise), the seeds side by side in threads of this one process (:func:`cmcr.train.train_seeds`: each training
computes single-threaded, so its bytes do not depend on the others; one process start per variant).

Reads the variant's plan ``data/params/variants/<variant>.json`` (written by the validate stage: its effective
config, seeds and Eq. 2 aggregate folder, :mod:`cmcr.plan`), not params.yaml: a change of params that leaves this
variant's plan as it was does not retrain it.
Writes ``models/connections/<variant>/seed<seed>.pt`` — the variant as the one-link graph it is (mode joint, or paired
for the paired-data reference; :func:`cmcr.graph.unit_from_connection`), read by :func:`cmcr.graph.load_unit` like
every trained unit — and ``models/history/<variant>/seed<seed>.json``.
"""

from common import AGGREGATED, CONNECTIONS, EMBEDDINGS, HISTORY, ROOT, run, setup_logging

from cmcr import layout
from cmcr.artifacts import save_torch, write_json
from cmcr.layout import checkpoint_path
from cmcr.norms import calibrate_all, link_sets
from cmcr.official import load_official
from cmcr.experiments import variant_from_spec
from cmcr.graph import unit_from_connection
from cmcr.plan import read_plan, unit_plan
from cmcr.train import ConnectionData, load_true_pairs, train_connection, train_paired, train_seeds


def main(variant: str) -> None:
    plan_file = unit_plan(ROOT / layout.variant_plan(variant), "variant", variant)  # before any log line
    log = setup_logging(f"train@{variant}")
    plan = read_plan(plan_file)
    v, seeds = variant_from_spec(plan), plan["seeds"]  # the plan is the variant's training spec + seeds
    log.info("plan %s: seeds %s%s", plan_file, seeds, f", Eq. 2 aggregates {plan['aggregate']}" if plan["aggregate"] else "")
    if v.official:  # the released projectors, evaluated by the same code as ours (one file: the same for every seed)
        result = load_official(ROOT / v.official["checkpoint"], v.official["release"])
        log.info("imported the official %s release from %s", v.official["release"], v.official["checkpoint"])
        results = {seed: result for seed in seeds}
    elif v.paired:  # the paired-data reference: the same projectors trained on true pairs (never C-MCR's data)
        pairs = load_true_pairs(EMBEDDINGS, v.config.connection.name, v.paired)
        results = train_seeds(lambda seed: train_paired(pairs, v.config.with_seed(seed), progress=False), seeds)
    else:
        data = ConnectionData.from_pipeline(EMBEDDINGS, AGGREGATED / plan["aggregate"], v.config, v.exclude_sources)
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
        # a variant is a one-link graph: one checkpoint format for every trained unit (cmcr.graph.load_unit)
        save_torch(checkpoint_path(CONNECTIONS, variant, seed), unit_from_connection(result, variant, v.paired).checkpoint())
        write_json(checkpoint_path(HISTORY, variant, seed, ".json"), result.history)
        if result.history:
            log.info("seed %d: final loss %.4f", seed, result.history[-1]["loss"])


if __name__ == "__main__":
    run(main)
