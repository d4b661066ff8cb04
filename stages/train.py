"""Stage `train@<variant>`: train one connection's projectors (Table 5 row, σ² point, text-source subset, 3D).

Reads the variant's effective config from ``data/params/<variant>.json`` (written by the validate stage),
not from params.yaml: a change of params that leaves this variant's config as it was does not retrain it.
"""

import json

from common import AGGREGATED, CONNECTIONS, EMBEDDINGS, HISTORY, PARAMS_DIR, ROOT, run, setup_logging
from cmcr.artifacts import ArtifactError, save_torch, write_json
from cmcr.experiments import variant_from_spec
from cmcr.official import load_official
from cmcr.train import ConnectionData, train_connection


def main(variant: str) -> None:
    log = setup_logging(f"train@{variant}")
    spec_file = PARAMS_DIR / f"{variant}.json"
    if not spec_file.is_file():
        known = sorted(p.stem for p in PARAMS_DIR.glob("*.json"))
        raise ArtifactError(f"{spec_file}: no such variant's config (unknown variant {variant!r}; "
                            f"params.yaml variants are: {', '.join(known) or 'none'}; run the validate stage first)")
    v = variant_from_spec(json.loads(spec_file.read_text()))
    log.info("config from %s", spec_file)
    if v.official:  # the released projectors, evaluated by the same code as ours
        result = load_official(ROOT / v.official["checkpoint"], v.official["release"])
        log.info("imported the official %s release from %s", v.official["release"], v.official["checkpoint"])
        save_torch(CONNECTIONS / f"{variant}.pt", result.checkpoint())
        write_json(HISTORY / f"{variant}.json", [])
        return
    config = v.config
    data = ConnectionData.from_pipeline(EMBEDDINGS, AGGREGATED / config.memory.mode, config, v.exclude_sources)
    result = train_connection(data, config)
    save_torch(CONNECTIONS / f"{variant}.pt", result.checkpoint())
    write_json(HISTORY / f"{variant}.json", result.history)


if __name__ == "__main__":
    run(main)
