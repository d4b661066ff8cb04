"""The official release's checkpoints load into our named projectors (real file for ulip_clip.pt)."""

import pytest
import torch

from cmcr.artifacts import save_torch
from cmcr.official import load_official
from cmcr.graph import connection_unit, load_unit


def test_real_ulip_clip_checkpoint(official_dir, tmp_path):
    raw = torch.load(official_dir / "ulip_clip.pt", map_location="cpu", weights_only=True)
    result = connection_unit(*load_official(official_dir / "ulip_clip.pt", "ulip_clip"), "ulip_clip")
    assert set(result.projectors) == {"clip", "ulip"}
    assert torch.equal(result.projectors["clip"].net[0].weight, raw["Head_A.net.0.weight"])  # Head_A = CLIP here
    assert torch.equal(result.projectors["ulip"].net[1].running_mean, raw["Head_B.net.1.running_mean"])
    x = torch.nn.functional.normalize(torch.randn(4, 512, generator=torch.Generator().manual_seed(0)), dim=1)
    with torch.no_grad():
        manual = torch.relu(torch.nn.functional.batch_norm(
            x @ raw["Head_B.net.0.weight"].T + raw["Head_B.net.0.bias"], raw["Head_B.net.1.running_mean"],
            raw["Head_B.net.1.running_var"], raw["Head_B.net.1.weight"], raw["Head_B.net.1.bias"], eps=1e-5))
        torch.testing.assert_close(result.projectors["ulip"].embed(x), torch.nn.functional.normalize(manual, dim=1))
    save_torch(tmp_path / "official.pt", result.checkpoint())  # our format
    again = load_unit(tmp_path / "official.pt")  # evaluated like our models: a one-link graph
    assert again.configs["clip_ulip"].projector.kind == "official_ulip_clip" and again.graph.links[0].name == "clip_ulip"


def test_clap_clip_layout_maps_head_b_to_clip(tmp_path):
    g = torch.Generator().manual_seed(0)
    state = {}
    for head in ("Head_A", "Head_B"):
        for i, shape in ((0, (1024, 512)), (3, (512, 1024))):
            state[f"{head}.net.{i}.weight"] = torch.randn(*shape, generator=g)
            state[f"{head}.net.{i}.bias"] = torch.randn(shape[0], generator=g)
        for i, n in ((1, 1024), (4, 512)):
            state[f"{head}.net.{i}.weight"] = torch.rand(n, generator=g)
            state[f"{head}.net.{i}.bias"] = torch.randn(n, generator=g)
            state[f"{head}.net.{i}.running_mean"] = torch.randn(n, generator=g)
            state[f"{head}.net.{i}.running_var"] = torch.rand(n, generator=g) + 0.5
            state[f"{head}.net.{i}.num_batches_tracked"] = torch.tensor(7)
    torch.save(state, tmp_path / "clap_clip.pt")
    projectors, _ = load_official(tmp_path / "clap_clip.pt", "clap_clip")
    assert torch.equal(projectors["clip"].net[3].weight, state["Head_B.net.3.weight"])
    assert torch.equal(projectors["clap"].net[0].weight, state["Head_A.net.0.weight"])
    assert len(projectors["clip"].net) == 5  # no final ReLU in the release


def test_wrong_file_or_release_is_refused(official_dir, tmp_path):
    with pytest.raises(ValueError, match="does not match the released official_clap_clip layout"):
        load_official(official_dir / "ulip_clip.pt", "clap_clip")
    with pytest.raises(FileNotFoundError, match="official checkpoint not found"):
        load_official(tmp_path / "nope.pt", "ulip_clip")
    with pytest.raises(ValueError, match="unknown release"):
        load_official(official_dir / "ulip_clip.pt", "clip_ulip")


def test_cli_import_official(official_dir, tmp_path):
    from typer.testing import CliRunner

    from cmcr.cli import app

    res = CliRunner().invoke(app, ["import-official", "--checkpoint", str(official_dir / "ulip_clip.pt"),
                                   "--release", "ulip_clip", "--out", str(tmp_path / "o.pt")])
    assert res.exit_code == 0, res.output
    assert set(load_unit(tmp_path / "o.pt").projectors) == {"clip", "ulip"}


class _OfficialMLP(torch.nn.Module):
    """The module structure of the official ``MLP`` (``cmcr/cmcr_projector.py``), re-created from its description:
    ``net1`` = Linear(c → c·e), BN, ReLU; ``net2`` = Linear(c·e → c), BN; forward = net2(net1(x))."""

    def __init__(self, channel=512, res_expansion=2.0):
        super().__init__()
        hidden = int(channel * res_expansion)
        self.net1 = torch.nn.Sequential(torch.nn.Linear(channel, hidden), torch.nn.BatchNorm1d(hidden), torch.nn.ReLU())
        self.net2 = torch.nn.Sequential(torch.nn.Linear(hidden, channel), torch.nn.BatchNorm1d(channel))

    def forward(self, x):
        return self.net2(self.net1(x))


class _OfficialMLPHalf(torch.nn.Module):
    """The official ``MLP_Half``: ``net`` = Linear(c → c), BN, ReLU."""

    def __init__(self, channel=512):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(channel, channel), torch.nn.BatchNorm1d(channel), torch.nn.ReLU())

    def forward(self, x):
        return self.net(x)


class _OfficialHeads(torch.nn.Module):
    def __init__(self, head):
        super().__init__()
        self.Head_A, self.Head_B = head(), head()
        for module in self.modules():  # trained-looking BatchNorm statistics, so BN is not the identity
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.data.uniform_(0.5, 1.5)
                module.bias.data.uniform_(-0.1, 0.1)
                module.num_batches_tracked.fill_(11)
        self.eval()


@pytest.mark.parametrize("release,head", [("clap_clip", _OfficialMLP), ("ulip_clip", _OfficialMLPHalf)])
def test_state_dict_of_the_official_module_structure_loads(release, head, tmp_path):
    """Issue 23, point 1: the released ``clap_clip.pt`` holds ``Head_A.net1.0.weight``, ``Head_A.net2.1.running_var``…
    (two blocks), which was refused. The keys here come from modules built like the official classes."""
    torch.manual_seed(0)
    official = _OfficialHeads(head)
    state = official.state_dict()
    if release == "clap_clip":
        assert "Head_A.net1.1.running_mean" in state and "Head_B.net2.0.weight" in state
    torch.save(state, tmp_path / f"{release}.pt")
    result = connection_unit(*load_official(tmp_path / f"{release}.pt", release), release)
    x = torch.nn.functional.normalize(torch.randn(6, 512), dim=1)
    spaces = {"clap_clip": ("clap", "clip"), "ulip_clip": ("clip", "ulip")}[release]  # (Head_A's, Head_B's)
    with torch.no_grad():
        for space, module in zip(spaces, (official.Head_A, official.Head_B)):
            torch.testing.assert_close(result.projectors[space].embed(x),
                                       torch.nn.functional.normalize(module(x), dim=1), rtol=0, atol=1e-6)
    (link, config), = result.configs.items()
    assert config.projector.hidden_dim == (1024 if release == "clap_clip" else 512)
    save_torch(tmp_path / "ours.pt", result.checkpoint())  # round-trips through ours
    assert load_unit(tmp_path / "ours.pt").configs[link].projector.kind == f"official_{release}"


def test_a_head_mixing_layouts_is_refused(tmp_path):
    torch.manual_seed(0)
    state = _OfficialHeads(_OfficialMLP).state_dict()
    state["Head_A.net.0.weight"] = state.pop("Head_A.net1.0.weight")
    torch.save(state, tmp_path / "mixed.pt")
    with pytest.raises(ValueError, match="mixes the official MLP layout"):
        load_official(tmp_path / "mixed.pt", "clap_clip")
