import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

from pathlib import Path

import pytest
import torch

ROOT_DIR = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared"
#: the official release's files; CMCR_OFFICIAL_FIXTURES points elsewhere (e.g. a copy carried to a GPU machine)
OFFICIAL = Path(os.environ.get("CMCR_OFFICIAL_FIXTURES") or SHARED / "fixtures" / "c-mcr-official")


def _paper_links() -> dict:
    """The links the project's params.yaml declares (``connections.<name>.link``): the paper's two are data there,
    no constant in the library."""
    from cmcr.config import connection_of
    from cmcr.params import load_params

    if not (ROOT_DIR / "params.yaml").is_file():  # a copy of this file outside the repository (test_pages)
        return {"clip_clap": None, "clip_ulip": None}
    params = load_params(ROOT_DIR / "params.yaml")
    return {name: connection_of(params, name) for name in params["connections"]}


PAPER_LINKS = _paper_links()
CLIP_CLAP, CLIP_ULIP = PAPER_LINKS["clip_clap"], PAPER_LINKS["clip_ulip"]


#: what an end-to-end test copies into its temporary repository to run `dvc repro` there
PROJECT_FILES = ["dvc.yaml", "params.yaml", "stages", "cmcr", ".dvc/config", ".dvcignore", "byo/embeddings/README.md",
                 "plugins/README.md"]


def copy_project(path: Path) -> None:
    """Copy the pipeline (dvc.yaml, params, stages, the cmcr package, DVC config) into ``path``."""
    import shutil

    root = Path(__file__).resolve().parents[1]
    for item in PROJECT_FILES:
        src, dst = root / item, path / item
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst)


def have_browser() -> bool:
    """Whether Chromium is there for the page checks (``cmcr.pages.check_page``). Without one a test skips its
    browser part, except under CI (``CI=true``): ``.ci/run`` installs Debian's chromium, so a missing browser
    there is a failure, never a silent skip."""
    from cmcr.pages import find_chromium

    if find_chromium() is not None:
        return True
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("CI=true but no chromium on PATH: .ci/run installs it (apt-get install chromium); the page "
                    "checks must run in CI")
    return False


@pytest.fixture
def chromium() -> None:
    """For tests that are all about a page in the browser: skip without Chromium (fail under CI=true)."""
    if not have_browser():
        pytest.skip("no chromium on PATH (apt-get install chromium)")


def unit(*shape: int, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1).to(dtype)


@pytest.fixture
def official_dir() -> Path:
    if not OFFICIAL.is_dir():
        pytest.skip(f"official fixtures not found at {OFFICIAL}")
    return OFFICIAL


def toy_world(n_train: int = 2000, n_memory: int = 1500, n_eval: int = 200, dim: int = 32, latent: int = 8,
              seed: int = 0):
    """Two synthetic contrastive spaces ("clip": text+image, "clap": text+audio) over one latent semantics.

    Each space embeds a latent u with its own random linear map and its own modality-gap offset per
    modality. Training sees only texts (in both spaces) and unpaired image / audio memories; evaluation
    pairs an audio and an image of the same latent item.
    """
    from cmcr.config import MemoryConfig
    from cmcr.memory import aggregate_memory
    from cmcr.train import ConnectionData

    g = torch.Generator().manual_seed(seed)
    norm = torch.nn.functional.normalize
    maps = {s: torch.randn(latent, dim, generator=g) for s in ("clip", "clap")}
    gaps = {m: torch.randn(dim, generator=g) * 0.8 for m in ("clip_text", "clip_image", "clap_text", "clap_audio")}

    def embed(u, space, modality):
        return norm(u @ maps[space] + gaps[f"{space}_{modality}"] + 0.3 * torch.randn(u.shape[0], dim, generator=g), dim=1)

    u_text = torch.randn(n_train, latent, generator=g)
    clip_text, clap_text = embed(u_text, "clip", "text"), embed(u_text, "clap", "text")
    image_memory = embed(torch.randn(n_memory, latent, generator=g), "clip", "image")
    audio_memory = embed(torch.randn(n_memory, latent, generator=g), "clap", "audio")
    cfg = MemoryConfig(temperature=0.05)
    data = ConnectionData(
        shared={"clip": clip_text, "clap": clap_text},
        memory={"clip": aggregate_memory(clip_text, image_memory, cfg, device="cpu"),
                "clap": aggregate_memory(clap_text, audio_memory, cfg, device="cpu")},
    )
    u_eval = torch.randn(n_eval, latent, generator=g)
    evaluation = {"clap_audio": embed(u_eval, "clap", "audio"), "clip_image": embed(u_eval, "clip", "image")}
    return data, evaluation
