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


class TracedParams(dict):
    """A params mapping that records which keys a stage reads (dotted paths).

    A scalar read records its path; iterating or copying a mapping records the mapping's path (all of
    it was read); membership tests record nothing. With ``CMCR_PARAMS_TRACE=<folder>`` set, every
    stage writes its reads there at exit, and the test suite checks they are all declared in the
    stage's ``params:`` in dvc.yaml, so an experiment (`dvc exp run -S …`) invalidates the right stages.
    """

    def __init__(self, data: dict, path: str = "", reads: set | None = None) -> None:
        super().__init__(data)
        self._path, self._reads = path, reads if reads is not None else set()

    def _child(self, key: str, value: Any) -> Any:
        path = f"{self._path}.{key}" if self._path else str(key)
        if isinstance(value, dict):
            return TracedParams(value, path, self._reads)
        self._reads.add(path)
        return value

    def __getitem__(self, key: str) -> Any:
        return self._child(key, super().__getitem__(key))

    def get(self, key: str, default: Any = None) -> Any:
        return self._child(key, super().get(key, default))

    def _all(self) -> None:
        self._reads.add(self._path)

    def __iter__(self):
        self._all()
        return super().__iter__()

    def keys(self):
        self._all()
        return super().keys()

    def items(self):
        self._all()
        return [(k, self._child(k, v)) for k, v in super().items()]

    def values(self):
        return [v for _, v in self.items()]

    def __len__(self) -> int:
        self._all()
        return super().__len__()

    def __bool__(self) -> bool:  # `params.get(g) or {}` is not a read of everything in g
        return super().__len__() > 0


def params() -> TracedParams:
    """params.yaml read as DVC reads it (YAML 1.2, :func:`cmcr.params.load_params`), reads traced."""
    from cmcr.params import load_params

    traced = TracedParams(load_params(ROOT / "params.yaml"))
    trace_dir = os.environ.get("CMCR_PARAMS_TRACE")
    if trace_dir:
        import atexit
        import json
        import sys

        stage = Path(sys.argv[0]).stem + (f"@{sys.argv[1]}" if len(sys.argv) > 1 else "")

        def dump() -> None:
            Path(trace_dir).mkdir(parents=True, exist_ok=True)
            (Path(trace_dir) / f"{stage}.json").write_text(json.dumps(sorted(traced._reads)))

        atexit.register(dump)
    return traced


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
