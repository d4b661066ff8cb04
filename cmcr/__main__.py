"""``python -m cmcr``: the same command line as ``cmcr``."""

from cmcr.cli import main

main()
