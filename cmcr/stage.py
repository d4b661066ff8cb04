"""``python -m cmcr.stage <stage> [argument]``: how dvc.yaml runs every pipeline stage.

The stage environment — fixed CPU threads and kernel paths (:mod:`cmcr.reproducibility`), ``HF_HUB_OFFLINE`` — is
put into this process before anything else is imported, then the stage script ``stages/<stage>.py`` of the project in
the working directory runs as ``__main__`` with ``[argument]`` as its command line. So no import order of a stage can
change its numbers. (A stage script run by hand, ``python stages/train.py K``, sets the same environment in
``stages/common.py``, restarting itself if numpy or torch were loaded first.)
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

from cmcr.reproducibility import pin_process


def main(argv: list[str]) -> None:
    if not argv:
        stages = sorted(p.stem for p in Path("stages").glob("*.py") if p.stem != "common")
        sys.exit(f"usage: python -m cmcr.stage <stage> [argument]; stages here: {', '.join(stages) or 'none'}")
    script = Path("stages") / f"{argv[0]}.py"
    if not script.is_file():
        sys.exit(f"python -m cmcr.stage: {script.resolve()} does not exist (run it from the project root)")
    pin_process()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.argv = [str(script.resolve()), *argv[1:]]
    sys.path.insert(0, str(script.resolve().parent))  # the stage's `from common import …`
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
