"""Stage `aggregate@<mode>`: Eq. 2 (softmax; argmax = Table 5 row I; random = row J) for every connection
whose variants or graph links train with this mode — built-in or declared in params (``connections.<name>.link``,
written under ``<mode>/<name>/``: :func:`cmcr.experiments.aggregate_folder`); the jobs (which sets are queries
and memories) come from the `Connection` definitions. `aggregates.json` lists what was computed and what was
not needed."""


from common import AGGREGATED, EMBEDDINGS, params, setup_logging, run
from cmcr.artifacts import atomic_dir, load_npy, npy_writer, write_json
from cmcr.config import memory_config_from_params
from cmcr.experiments import aggregate_folder, aggregates_needed
from cmcr.graph import connections_of
from cmcr.memory import aggregate_memory


def main(mode: str) -> None:
    log = setup_logging(f"aggregate@{mode}")
    p = params()
    needed = aggregates_needed(p)
    done = {}
    links = connections_of(p)  # built-in and declared
    with atomic_dir(AGGREGATED / mode) as tmp:
        for connection in links.values():
            if mode not in needed.get(connection.name, ()):
                log.info("%s: no variant or graph trains with memory.mode=%s; Eq. 2 not computed", connection.name, mode)
                continue
            config = memory_config_from_params(p, connection.name, mode)
            folder = aggregate_folder(tmp, "", connection.name)
            folder.mkdir(parents=True, exist_ok=True)
            for name, queries, memory in connection.aggregate_jobs():
                q = load_npy(EMBEDDINGS / f"{queries}.npy")
                m = load_npy(EMBEDDINGS / f"{memory}.npy", dim=q.shape[1])
                log.info("Eq. 2 (%s, tau1=%g): %s ← %s over %s", mode, config.temperature, name, queries, memory)
                with npy_writer(folder / f"{name}.npy", q.shape) as dest:
                    aggregate_memory(q, m, config, out=dest, progress=True, desc=name)
            done[connection.name] = [job[0] for job in connection.aggregate_jobs()]
        write_json(tmp / "aggregates.json", {"mode": mode, "computed": done,
                                              "not_needed": sorted(set(links) - set(done))})


if __name__ == "__main__":
    run(main)
