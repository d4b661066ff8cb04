"""Stage `validate`: check the whole resolved params.yaml before any other stage runs.

Every other stage depends on ``data/params/valid.txt``, so DVC runs this stage first: an invalid value
(``dvc exp run -S noise.var=-1``) stops the pipeline here, before any stage has deleted an output. The
file's text is fixed, so a valid change of params reruns only the stages that read the changed keys.

It also writes the resolved plan (:mod:`cmcr.plan`, paths in :mod:`cmcr.layout`): one file per variant, graph
and space and one for the Eq. 2 aggregates — what each later stage does. Those stages depend on their own plan
file rather than on params, so a change that leaves a unit's plan as it was (``-S noise.var=…`` for the σ²
sweep points; a link declared for another graph) does not rerun it. A file is rewritten only when its text
changes. The folder is a persistent output (DVC does not delete it before this stage runs); plans of units no
longer in params are removed here.
"""

from common import BYO, ROOT, run, setup_logging

from cmcr import layout
from cmcr.artifacts import atomic_path
from cmcr.experiments import (describe_stale, pipeline_spaces, scale_of, seeds_of, setup_of, stale_outputs,
                              training_scale, training_scale_block)
from cmcr.graph import graphs_of
from cmcr.params import load_params
from cmcr.plan import pipeline_plans, plan_text, sets_from_plan, unit_plans
from cmcr.train import FEW_STEPS
from cmcr.validation import check_byo_layout, check_params, few_steps
from cmcr.world import WorldConfig


def write_if_changed(path, text: str) -> bool:
    """Write ``text`` to ``path`` (atomically) unless it holds it already; whether it was written."""
    if path.is_file() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, path.suffix) as tmp:
        tmp.write_text(text)
    return True


def main() -> None:
    log = setup_logging("validate")
    p = load_params(ROOT / "params.yaml")  # all of it, as DVC reads it (its one stage that reads params.yaml)
    resolved = check_params(p)
    graphs = graphs_of(p)
    plans = pipeline_plans(p, resolved, graphs)
    rows = None  # (space, set) → items: known here for byo (its files) and demo (its world's sizes)
    if setup_of(p) == "byo":  # before any stage has replaced the demo outputs by SKIPPED markers
        sets = {s: sets_from_plan(plans[layout.space_plan(s)]) for s in pipeline_spaces(p)}
        found = check_byo_layout(sets, BYO, temp_workspace=".dvc/tmp/exps" in ROOT.as_posix())
        log.info("setup byo: %d embedding sets in %s present, rows matching their tables", len(found), BYO)
        rows = lambda space, name: found.get((space, name))  # noqa: E731
    elif setup_of(p) == "demo":
        world = WorldConfig(**(p.get("demo") or {}).get("world") or {})
        rows = lambda space, name: world.set_rows(name)  # noqa: E731
    log.info("training scale %s (scale.mode %s, setup %s; README \"Training scale\")", scale_of(p),
             (p.get("scale") or {}).get("mode", "setup"), setup_of(p))
    if rows is None:
        log.info("setup paper: the training sets' sizes are known after extraction; each training logs its steps")
    elif scale_of(p) == "small":  # a quick scale chosen (the demo's): one line, every unit named with its steps
        few = few_steps(unit_plans(plans, resolved, graphs), rows)
        if few:
            log.warning("scale small: %d units train fewer than %d optimiser steps (%s) — the quick scale; scale.mode "
                        "auto trains each at least %d (README \"Training scale\")", len(few), FEW_STEPS,
                        ", ".join(f"{unit} {steps}" for unit, steps, _ in few), training_scale_block(p)["auto"]["steps"])
    else:
        for unit, steps, how in few_steps(unit_plans(plans, resolved, graphs), rows):
            log.warning("%s trains %s optimiser steps (%s): fewer than %d — more with scale.mode auto, or set "
                        "train.epochs / train.batch_size (README \"Training scale\")", unit, steps, how, FEW_STEPS)
    for name, variant in resolved.items():
        for note in training_scale(p, variant.config.connection.name)[1]:
            log.info("variant %s: %s", name, note)
    changed = [path for path, plan in plans.items() if write_if_changed(ROOT / path, plan_text(plan))]
    for stale in sorted((ROOT / layout.PLANS).rglob("*.json")):
        if stale.relative_to(ROOT) not in plans:
            log.info("removing %s: its unit is no longer in params.yaml", stale)
            stale.unlink()
    log.info("%d plans in %s, %d changed%s", len(plans), layout.PLANS, len(changed),
             f" ({', '.join(str(c.relative_to(layout.PLANS)) for c in changed)})" if changed else "")
    stale = stale_outputs(ROOT, list(resolved), seeds_of(p), list(graphs))
    if stale:  # DVC keeps the outputs of a stage that no longer exists; nothing reads them (stages go by plans)
        log.warning("%s — not evaluated or reported; list or remove them with `cmcr clean --stale [--dry-run]`",
                    describe_stale(stale, list(resolved) + list(graphs)))
    write_if_changed(ROOT / layout.VALID, "params.yaml passed the validate stage (cmcr.validation.validate_params)\n")
    log.info("%s: valid; %d variants (%s), %d graphs (%s) × seeds %s → %s", ROOT / "params.yaml", len(resolved),
             ", ".join(resolved), len(graphs), ", ".join(graphs), seeds_of(p), layout.PLANS)


if __name__ == "__main__":
    run(main)
