import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"
OFFICIAL = SHARED / "fixtures" / "c-mcr-official"


def unit(*shape: int, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1).to(dtype)


@pytest.fixture
def official_dir() -> Path:
    if not OFFICIAL.is_dir():
        pytest.skip(f"official fixtures not found at {OFFICIAL}")
    return OFFICIAL
