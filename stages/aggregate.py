"""Stage `aggregate@<mode>`: Eq. 2 for both connections (softmax; argmax = Table 5 row I; random = row J)."""


from common import AGGREGATED, EMBEDDINGS, params, setup_logging, run
from cmcr.artifacts import atomic_dir, load_npy, npy_writer
from cmcr.config import memory_config_from_params
from cmcr.memory import aggregate_memory

#: connection → [(output name, query set, memory set)], sets as "<space>/<name>"
JOBS = {
    "clip_clap": [("clip_image_from_text", "clip/text", "clip/image"), ("clap_audio_from_text", "clap/text", "clap/audio")],
    "clip_ulip": [("clip_text_from_image", "clip/image", "clip/text"), ("ulip_points_from_image", "ulip/image", "ulip/points")],
}


def main(mode: str) -> None:
    log = setup_logging(f"aggregate@{mode}")
    p = params()
    with atomic_dir(AGGREGATED / mode) as tmp:
        for connection, jobs in JOBS.items():
            config = memory_config_from_params(p, connection, mode)
            for name, queries, memory in jobs:
                q = load_npy(EMBEDDINGS / f"{queries}.npy")
                m = load_npy(EMBEDDINGS / f"{memory}.npy", dim=q.shape[1])
                log.info("Eq. 2 (%s, tau1=%g): %s ← %s over %s", mode, config.temperature, name, queries, memory)
                with npy_writer(tmp / f"{name}.npy", q.shape) as dest:
                    aggregate_memory(q, m, config, out=dest, progress=True, desc=name)


if __name__ == "__main__":
    run(main)
