"""Stage `aggregate`: Eq. 2 (softmax; argmax = Table 5 row I; random = row J) for every job of the plan
``data/params/aggregates.json`` (written by the validate stage, :func:`cmcr.plan.aggregate_plan`): each distinct
``(link, memory config)`` a variant or a graph trains on, into ``data/aggregated/<link>/<key>/`` (the key is the
mode, or the mode and a digest where a unit sets its own τ1 or seed: :func:`cmcr.plan.aggregate_key`); which sets
are queries and memories comes from the link's definition (:meth:`cmcr.config.Connection.aggregate_jobs`).
``aggregates.json`` lists what was computed with which settings; ``DONE.txt`` (a fixed text) is what the
trained units depend on to run after this stage (:data:`cmcr.layout.AGGREGATES_DONE`)."""

from common import AGGREGATED, EMBEDDINGS, ROOT, setup_logging, run

from cmcr import layout
from cmcr.artifacts import atomic_dir, load_npy, npy_writer, write_json
from cmcr.config import Connection, MemoryConfig
from cmcr.memory import aggregate_memory
from cmcr.plan import read_plan


def main() -> None:
    log = setup_logging("aggregate")
    jobs = read_plan(ROOT / layout.AGGREGATE_PLAN)["jobs"]
    links = {folder: Connection.from_link_dict(job["link"]) for folder, job in jobs.items()}
    with atomic_dir(AGGREGATED) as tmp:
        for folder, job in jobs.items():
            link, config = links[folder], MemoryConfig(**job["memory"])
            (tmp / folder).mkdir(parents=True, exist_ok=True)
            for name, queries, memory in link.aggregate_jobs():
                q = load_npy(EMBEDDINGS / f"{queries}.npy")
                m = load_npy(EMBEDDINGS / f"{memory}.npy", dim=q.shape[1])
                log.info("Eq. 2 (%s, tau1=%g): %s/%s ← %s over %s", config.mode, config.temperature, folder, name,
                         queries, memory)
                with npy_writer(tmp / folder / f"{name}.npy", q.shape) as dest:
                    aggregate_memory(q, m, config, out=dest, progress=True, desc=name)
        write_json(tmp / "aggregates.json", {folder: {"link": job["link"]["name"], "memory": job["memory"],
                                                      "aggregates": [a for a, _, _ in links[folder].aggregate_jobs()]}
                                             for folder, job in jobs.items()})
        (tmp / layout.AGGREGATES_DONE.name).write_text("Eq. 2 aggregates written by the aggregate stage (cmcr.plan)\n")
    log.info("%d Eq. 2 jobs → %s", len(jobs), AGGREGATED)


if __name__ == "__main__":
    run(main)
