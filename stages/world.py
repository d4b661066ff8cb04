"""Stage `world`: generate the embedded demo world (setup: demo)."""

from common import WORLD, stage_params, run, setup_logging, skipped_marker

import shutil

from cmcr.artifacts import atomic_dir
from cmcr.experiments import setup_of
from cmcr.world import WorldConfig, generate_world


def main() -> None:
    log = setup_logging("world")
    p = stage_params("world")  # setup and its own keys only (data/params/stages/world.json)
    if setup_of(p) != "demo":
        shutil.rmtree(WORLD, ignore_errors=True)
        skipped_marker(WORLD, f"setup={setup_of(p)}: the demo world is not used")
        return
    with atomic_dir(WORLD) as tmp:  # the folder appears only when complete
        counts = generate_world(tmp, WorldConfig(**p["demo"]["world"]))
    log.info("wrote %s: %s", WORLD, counts)


if __name__ == "__main__":
    run(main)
