"""Shared helpers of the stage scripts: params, logging, paths (stages stay thin; logic is in cmcr/)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORLD = ROOT / "data" / "world"
TEXTS = ROOT / "data" / "texts.parquet"
EMBEDDINGS = ROOT / "data" / "embeddings"
AGGREGATED = ROOT / "data" / "aggregated"
SPACES = ROOT / "models" / "spaces"
CONNECTIONS = ROOT / "models" / "connections"
HISTORY = ROOT / "models" / "history"
METRICS = ROOT / "metrics"
RESULTS = ROOT / "results"


def params() -> dict[str, Any]:
    path = ROOT / "params.yaml"
    return yaml.safe_load(path.read_text()) or {}


def setup_logging(stage: str) -> logging.Logger:
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {stage} %(levelname)s: %(message)s")
    return logging.getLogger(stage)


def skipped_marker(folder: Path, reason: str) -> None:
    """For a stage that has nothing to do in this setup: an output that says so (DVC needs the output)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "SKIPPED").write_text(reason + "\n")
