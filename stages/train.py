"""Stages `train@<variant>` and `graph@<name>`: train one unit — a variant (one connection: a Table 5 row, a σ²
point, a text-source subset, 3D, a paired-data reference, an imported release) or an MCR graph (joint, extend,
paired, linear) — once per training seed (``seeds`` in params.yaml: initialisation, shuffling, Eq. 3 noise), the
seeds side by side in threads of this one process (:func:`cmcr.train.train_seeds`: each training computes
single-threaded, so its bytes do not depend on the others).

    python -m cmcr.stage train K                 # train@K
    python -m cmcr.stage train --kind graph joint  # graph@joint

Reads the unit's plan (``data/params/variants/<v>.json`` or ``graphs/<g>.json``, written by the validate stage; one
format, :class:`cmcr.plan.UnitPlan`: its graph, effective configs, seeds and Eq. 2 aggregate folders), not params.yaml: a change of params
that leaves this unit's plan as it was does not retrain it. One trainer entry (:func:`cmcr.units.train_unit`), one
result type and checkpoint format for both kinds: ``models/connections/<v>/seed<s>.pt`` (the variant as the one-link
graph it is) or ``models/graphs/<g>/seed<s>.pt``, and their histories (``models/history``, ``models/graph_history``).
"""

from common import ROOT, run, setup_logging

from cmcr.config import ConfigError
from cmcr.plan import read_plan, unit_plan_file
from cmcr.units import KINDS, save_unit, train_unit


def main(name: str, kind: str = "variant") -> None:
    if kind not in KINDS:
        raise ConfigError(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
    plan_file = unit_plan_file(ROOT / KINDS[kind][0](name), kind, name)  # before any log line
    log = setup_logging(f"{'train' if kind == 'variant' else 'graph'}@{name}")
    log.info("plan %s", plan_file)
    save_unit(kind, name, train_unit(name, read_plan(plan_file), ROOT), ROOT)


if __name__ == "__main__":
    run(main)
