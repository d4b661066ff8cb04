"""Shared helpers of the stage scripts: params, logging, paths (stages stay thin; logic is in cmcr/)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from cmcr import layout
from cmcr.reproducibility import is_stage_script, kernel_warning, pin_process

# Every stage computes with a fixed number of CPU threads and fixed CPU kernel paths (cmcr.reproducibility: the AVX2
# path of PyTorch, MKL, oneDNN, OpenBLAS and numpy), so its numbers are the same on every machine. dvc.yaml runs each
# stage through `python -m cmcr.stage <stage>`, which sets that environment before anything is imported; a stage
# script run by hand gets it here — this module is every stage script's first import (tests/test_dvc_deps.py keeps it
# so), and a script that loaded numpy or torch before would start itself again with it. A test or tool that imports
# this module (not a script in stages/) keeps its own environment.
STAGE_ENVIRONMENT = pin_process() if is_stage_script(sys.argv[0]) else None
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
# every artifact's path under the project root (cmcr.layout: the one source of dvc.yaml's, the API's and clean's)
WORLD, TEXTS, EMBEDDINGS, AGGREGATED = (ROOT / p for p in (layout.WORLD, layout.TEXTS, layout.EMBEDDINGS, layout.AGGREGATED))
SPACES, CONNECTIONS, HISTORY = (ROOT / p for p in (layout.SPACES, layout.CONNECTIONS, layout.HISTORY))
GRAPHS, GRAPH_HISTORY, METRICS, RESULTS = (ROOT / p for p in (layout.GRAPHS, layout.GRAPH_HISTORY, layout.METRICS, layout.RESULTS))
BYO = ROOT / layout.BYO


def stage_params(stage: str) -> dict[str, Any]:
    """The params a data stage reads, from its plan (:func:`cmcr.plan.stage_plan`, written by the validate stage):
    exactly the keys :data:`cmcr.plan.STAGE_PARAMS` names — a read of any other key fails — so DVC reruns the stage
    when one of those changes and never for another (the plan file is its dependency, not params.yaml)."""
    from cmcr.plan import read_plan  # here, not at the top: cmcr.plan imports torch, which must follow the pins above

    return read_plan(ROOT / layout.stage_plan(stage))["params"]


def setup_logging(stage: str) -> logging.Logger:
    import torch

    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {stage} %(levelname)s: %(message)s")
    log = logging.getLogger(stage)
    if STAGE_ENVIRONMENT is None:  # imported by a script outside stages/ (tests, tools): not pinned
        log.info("computing with %d CPU thread(s)", torch.get_num_threads())
        return log
    log.info(STAGE_ENVIRONMENT.describe())
    warning = kernel_warning(STAGE_ENVIRONMENT.processor)
    if warning:
        log.warning(warning)
    return log


def skipped_marker(folder: Path, reason: str) -> None:
    """For a stage that has nothing to do in this setup: an output that says so (DVC needs the output)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "SKIPPED").write_text(reason + "\n")


def run(main) -> None:
    """Run a stage's ``main`` as a typer command. A bad input or config (ConfigError, ArtifactError,
    EmbeddingError: the message names the file or key) prints as one line and exits 1; anything else
    is a bug and keeps its traceback. ``CMCR_TRACEBACK=1`` shows tracebacks for all."""
    import sys

    import typer

    from cmcr.artifacts import ArtifactError
    from cmcr.checks import EmbeddingError
    from cmcr.config import ConfigError
    from cmcr.device import configure_threads
    from cmcr.reproducibility import STAGE_THREADS
    from cmcr.errors import one_line_errors

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(main)
    with one_line_errors(Path(sys.argv[0]).stem, (ConfigError, ArtifactError, EmbeddingError)):
        configure_threads(default=STAGE_THREADS)
        app()
