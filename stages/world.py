"""Stage `world`: generate the embedded demo world (setup: demo)."""

import shutil


from common import WORLD, params, setup_logging, skipped_marker, run
from cmcr.experiments import setup_of
from cmcr.world import WorldConfig, generate_world


def main() -> None:
    log = setup_logging("world")
    p = params()
    shutil.rmtree(WORLD, ignore_errors=True)
    if setup_of(p) != "demo":
        skipped_marker(WORLD, f"setup={setup_of(p)}: the demo world is not used")
        return
    tmp = WORLD.with_name(WORLD.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    counts = generate_world(tmp, WorldConfig(**p["demo"]["world"]))
    tmp.rename(WORLD)  # the folder appears only when complete
    log.info("wrote %s: %s", WORLD, counts)


if __name__ == "__main__":
    run(main)
