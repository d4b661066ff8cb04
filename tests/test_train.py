"""The trainer: it learns, it is deterministic, only projectors get gradients, checkpoints round-trip."""

import math
import os

import pytest
import torch

from cmcr.checks import EmbeddingError
from cmcr.config import ConnectionConfig, LossConfig, NoiseConfig, ProjectorConfig, TrainConfig
from cmcr.metrics.retrieval import bidirectional_retrieval, random_expectation
from cmcr.graph import link_graph, load_unit, train_connection, train_paired
from cmcr.train import ConnectionData, auto_scale, batch_slices, cosine_lr
from conftest import CLIP_CLAP, toy_world


def small_config(**loss) -> ConnectionConfig:
    return ConnectionConfig(
        connection=CLIP_CLAP,
        projector=ProjectorConfig(in_dims={"clip": 32, "clap": 32}, hidden_dim=64, out_dim=32),
        noise=NoiseConfig(var=0.004),
        loss=LossConfig(shared_temperature=0.05, pseudo_temperature=0.05, lambda_intra=0.1, **loss),
        train=TrainConfig(epochs=15, batch_size=256, lr=3e-3, seed=0, device="cpu"),
    )


@pytest.fixture(scope="module")
def world():
    return toy_world()


def test_cosine_schedule_values():
    assert cosine_lr(0, 100, 1e-3, 0.0) == pytest.approx(1e-3)
    assert cosine_lr(50, 100, 1e-3, 0.0) == pytest.approx(0.5e-3)
    assert cosine_lr(25, 100, 1e-3, 1e-4) == pytest.approx(1e-4 + 0.45e-3 * (1 + math.cos(math.pi / 4)))


def test_batch_slices_cover_all_items_and_drop_a_single_tail():
    assert [(s.start, s.stop) for s in batch_slices(10, 4)] == [(0, 4), (4, 8), (8, 10)]
    assert [(s.start, s.stop) for s in batch_slices(9, 4)] == [(0, 4), (4, 8)]


@pytest.mark.parametrize("n,epochs,batch,steps,min_batch,expected", [
    (2_330_000, 36, 10240, 500, 128, (36, 10240)),  # paper-sized: the paper's values (8,208 steps)
    (2000, 36, 10240, 500, 128, (36, 144)),         # ⌊2000·36/500⌋ = 144: 14 batches × 36 = 504 steps
    (3000, 24, 8192, 500, 128, (24, 144)),          # ⌊3000·24/500⌋ = 144: 21 × 24 = 504
    (2000, 36, 10240, 2000, 128, (125, 128)),       # min_batch reached: 16 batches/epoch, ⌈2000/16⌉ = 125 epochs
    (2000, 5, 128, 500, 128, (32, 128)),            # the small scale's start: batch capped by the configured 128
    (100, 36, 10240, 500, 128, (500, 100)),         # smaller than min_batch: one batch of all, 500 epochs
    (1_000_000, 36, 10240, 500, 128, (36, 10240)),
])
def test_auto_scale_reaches_the_steps_from_the_data_size(n, epochs, batch, steps, min_batch, expected):
    """Issue 32 (1): hand-computed cases of the auto rule; 0 steps is the configured scale untouched."""
    train = TrainConfig(epochs=epochs, batch_size=batch, auto_steps=steps, auto_min_batch=min_batch)
    scaled = auto_scale(train, n)
    assert (scaled.epochs, scaled.batch_size) == expected
    assert scaled.epochs * len(batch_slices(n, scaled.batch_size)) >= steps
    assert (scaled.auto_steps, scaled.lr) == (steps, train.lr)  # the rest as configured, the rule kept
    assert auto_scale(scaled, n) == scaled  # idempotent: a checkpoint's config retrains the same
    plain = TrainConfig(epochs=epochs, batch_size=batch)
    assert auto_scale(plain, n) is plain


def test_scale_auto_trains_and_the_checkpoint_holds_what_ran(world, tmp_path):
    """The effective epochs / batch size are the checkpoint's (and the history has that many epochs)."""
    from cmcr.artifacts import save_torch

    data, _ = world
    n = data.validate(data.resolve_dims(small_config()))
    config = ConnectionConfig(**{**small_config().__dict__, "train": TrainConfig(
        epochs=2, batch_size=10240, auto_steps=12, auto_min_batch=64, device="cpu")})
    result = train_connection(data, config, progress=False)
    batch = n * 2 // 12
    ran = result.configs["clip_clap"].train
    assert (ran.epochs, ran.batch_size) == (2, batch) and batch >= 64
    assert len(result.history["joint"]) == 2
    save_torch(tmp_path / "p.pt", result.checkpoint())
    assert load_unit(tmp_path / "p.pt").configs["clip_clap"].train == ran


def test_training_connects_the_spaces_and_row_f_does_not(world):
    data, ev = world
    trained = train_connection(data, small_config(), progress=False)
    first, last = trained.history["joint"][0]["loss"], trained.history["joint"][-1]["loss"]
    assert last < 0.8 * first
    with torch.no_grad():
        a = trained.projectors["clap"].embed(ev["clap_audio"])
        i = trained.projectors["clip"].embed(ev["clip_image"])
    metrics = bidirectional_retrieval(a, i)
    chance = random_expectation(200)["mAP"]  # 2.94 %
    assert metrics["A2I"]["mAP"] > 4 * chance and metrics["I2A"]["mAP"] > 4 * chance

    row_f = train_connection(data, small_config(shared_pair=False, pseudo_pair=False), progress=False)
    with torch.no_grad():
        a = row_f.projectors["clap"].embed(ev["clap_audio"])
        i = row_f.projectors["clip"].embed(ev["clip_image"])
    assert bidirectional_retrieval(a, i)["A2I"]["mAP"] < 2.5 * chance


def test_same_seed_gives_bitwise_identical_weights(world):
    data, _ = world
    config = small_config()
    config = ConnectionConfig(**{**config.__dict__, "train": TrainConfig(epochs=2, batch_size=256, device="cpu", seed=7)})
    a = {s: m.state_dict() for s, m in train_connection(data, config, progress=False).projectors.items()}
    b = {s: m.state_dict() for s, m in train_connection(data, config, progress=False).projectors.items()}
    for space in a:
        for key in a[space]:
            assert torch.equal(a[space][key], b[space][key]), (space, key)
    other = ConnectionConfig(**{**config.__dict__, "train": TrainConfig(epochs=2, batch_size=256, device="cpu", seed=8)})
    c = {s: m.state_dict() for s, m in train_connection(data, other, progress=False).projectors.items()}
    assert not torch.equal(a["clip"]["net.0.weight"], c["clip"]["net.0.weight"])


def test_gradients_reach_only_the_projectors(world):
    data, _ = world
    # A "frozen encoder" whose outputs still carry a graph: the trainer must not backpropagate into it.
    encoder = torch.nn.Linear(32, 32)
    with torch.no_grad():
        encoder.weight.copy_(torch.eye(32))
        encoder.bias.zero_()
    shared_clip = torch.nn.functional.normalize(encoder(torch.as_tensor(data.shared["clip"])), dim=1)
    assert shared_clip.requires_grad
    attached = ConnectionData(shared={**data.shared, "clip": shared_clip}, memory=data.memory)
    config = ConnectionConfig(**{**small_config().__dict__, "train": TrainConfig(epochs=1, batch_size=512, device="cpu")})
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    result = train_connection(attached, config, progress=False)
    assert encoder.weight.grad is None and encoder.bias.grad is None
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())
    init = train_connection.__globals__["build_projectors"]
    torch.manual_seed(0)
    fresh = init(config.projector, ("clip", "clap"))
    for space in ("clip", "clap"):  # both projectors moved away from their initialisation
        assert not torch.equal(fresh[space].net[0].weight, result.projectors[space].net[0].weight)


def test_checkpoint_round_trip_with_weights_only(world, tmp_path):
    from cmcr.artifacts import save_torch

    data, ev = world
    config = ConnectionConfig(**{**small_config().__dict__, "train": TrainConfig(epochs=1, batch_size=512, device="cpu")})
    result = train_connection(data, config, name="K", progress=False)
    save_torch(tmp_path / "p.pt", result.checkpoint())
    loaded = load_unit(tmp_path / "p.pt")  # a connection is a one-link graph: one checkpoint format
    assert loaded.configs == {"clip_clap": config} and loaded.graph.mode == "joint" and loaded.graph.links == (CLIP_CLAP,)
    history = loaded.history["joint"]
    assert len(history) == 1 and set(history[0]) >= {"loss", "shared_pair", "pseudo_pair", "intra", "lr"}
    with torch.no_grad():
        torch.testing.assert_close(loaded.projectors["clap"].embed(ev["clap_audio"]),
                                   result.projectors["clap"].embed(ev["clap_audio"]))


def test_bad_training_inputs(world):
    data, _ = world
    config = small_config()
    wide = ConnectionData(shared={**data.shared, "clap": torch.zeros(2000, 16)}, memory=data.memory)
    with pytest.raises(EmbeddingError, match="projector.in_dims.clap is 32 but the clap embeddings have 16 columns"):
        train_connection(wide, config, progress=False)
    nan = data.shared["clip"].clone()
    nan[5, 0] = float("nan")
    with pytest.raises(EmbeddingError, match="clip_text: contains NaN"):
        train_connection(ConnectionData(shared={**data.shared, "clip": nan}, memory=data.memory), config, progress=False)
    short = ConnectionData(shared=data.shared, memory={**data.memory, "clap": data.memory["clap"][:10]})
    with pytest.raises(EmbeddingError, match="clap_audio .Eq. 2 aggregate. has 10; they must be paired"):
        train_connection(short, config, progress=False)


def test_input_widths_come_from_the_data():
    """Spaces of different widths (64 and 48) train without stating them; a stated width must agree."""
    import dataclasses

    from conftest import unit

    data = ConnectionData(shared={"clip": unit(40, 64, seed=1), "clap": unit(40, 48, seed=2)},
                          memory={"clip": unit(40, 64, seed=3), "clap": unit(40, 48, seed=4)})
    config = dataclasses.replace(small_config(), projector=ProjectorConfig(hidden_dim=16, out_dim=8),
                                 train=TrainConfig(epochs=1, batch_size=20, device="cpu"))
    result = train_connection(data, config, progress=False)
    assert result.configs["clip_clap"].projector.in_dims == {"clip": 64, "clap": 48}
    assert result.projectors["clap"](unit(3, 48)).shape == (3, 8)
    stated = dataclasses.replace(config, projector=ProjectorConfig(in_dims={"clip": 64, "clap": 512}, hidden_dim=16,
                                                                    out_dim=8))
    with pytest.raises(EmbeddingError, match="projector.in_dims.clap is 512 but the clap embeddings have 48 columns"):
        train_connection(data, stated, progress=False)


def test_two_runs_of_the_same_training_give_the_same_checkpoint_bytes(tmp_path):
    """No wall-clock time (or anything else run-dependent) inside the checkpoint: same training, same file."""
    import dataclasses

    from cmcr.artifacts import save_torch
    from conftest import unit

    data = ConnectionData(shared={"clip": unit(60, 32, seed=1), "clap": unit(60, 32, seed=2)},
                          memory={"clip": unit(60, 32, seed=3), "clap": unit(60, 32, seed=4)})
    config = dataclasses.replace(small_config(), train=TrainConfig(epochs=2, batch_size=30, device="cpu"))
    for name in ("a.pt", "b.pt"):
        save_torch(tmp_path / name, train_connection(data, config, name="K", progress=False).checkpoint())
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()


def true_pairs(n: int, seed: int, dim: int = 32, latent: int = 8):
    """Audio–image pairs of one latent item, each in its own space (the data C-MCR never has)."""
    g = torch.Generator().manual_seed(seed)
    maps = {s: torch.randn(latent, dim, generator=torch.Generator().manual_seed(100 + i)) for i, s in enumerate(("clip", "clap"))}
    u = torch.randn(n, latent, generator=g)
    return {s: torch.nn.functional.normalize(u @ maps[s] + 0.3 * torch.randn(n, dim, generator=g), dim=1)
            for s in ("clip", "clap")}


def test_paired_reference_learns_from_true_pairs_and_beats_random(tmp_path):
    train, held_out = true_pairs(2000, seed=1), true_pairs(200, seed=2)
    graph = link_graph(CLIP_CLAP, "paired", paired=True, dataset="demo")
    result = train_paired(graph, train, small_config(), progress=False)
    history = result.history["paired"]
    assert result.graph.mode == "paired" and set(history[0]) == {"epoch", "lr", "paired", "loss"}
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    with torch.no_grad():
        a = result.projectors["clap"].embed(held_out["clap"])
        i = result.projectors["clip"].embed(held_out["clip"])
    chance = random_expectation(200)["mAP"]
    scores = bidirectional_retrieval(a, i)
    assert scores["A2I"]["mAP"] > 5 * chance and scores["I2A"]["mAP"] > 5 * chance
    path = tmp_path / "paired.pt"
    torch.save(result.checkpoint(), path)
    loaded = load_unit(path)  # the paired-data reference is a paired graph of one link: its memory modalities' pairs
    assert loaded.graph.mode == "paired" and loaded.graph.pairs == {"dataset": "demo",
                                                                     "modalities": {"clip": "image", "clap": "audio"}}
    assert loaded.graph.modalities() == {"image": "clip", "audio": "clap"}
    with pytest.raises(EmbeddingError, match="same number of rows|rows"):
        train_paired(graph, {"clip": train["clip"], "clap": train["clap"][:-5]}, small_config(), progress=False)
    with pytest.raises(EmbeddingError, match="must be given for spaces"):
        train_paired(graph, {"clip": train["clip"]}, small_config(), progress=False)


def adamw_pair(device="cpu"):
    """A BatchNorm network trained side by side by torch.optim.AdamW and cmcr.optim.AdamW (same init, same batches,
    a cosine learning rate set every step, one parameter frozen for the first steps): both networks' parameters."""
    from cmcr.optim import AdamW
    from cmcr.train import cosine_lr

    def net():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(),
                                   torch.nn.Linear(16, 4)).to(device)

    theirs, ours = net(), net()
    reference = torch.optim.AdamW(theirs.parameters(), lr=1e-2, weight_decay=0.01)
    optimiser = AdamW(ours.parameters(), weight_decay=0.01)
    g = torch.Generator().manual_seed(1)
    for step in range(60):
        x, y = torch.randn(64, 8, generator=g).to(device), torch.randn(64, 4, generator=g).to(device)
        lr = cosine_lr(step, 60, 1e-2, 1e-4)
        for group in reference.param_groups:
            group["lr"] = lr
        for model, opt in ((theirs, reference), (ours, optimiser)):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            if step < 5:  # a parameter without a gradient keeps its state (and its step count) untouched
                model[3].bias.grad = None
        reference.step()
        optimiser.step(lr)
    return dict(theirs.named_parameters()), dict(ours.named_parameters())


def test_adamw_is_torch_adamw_bit_for_bit_and_spares_the_dynamo_import():
    """cmcr.optim.AdamW (issue 31, point 6: it replaced a run-time patch of torch.optim) gives bit-identical parameters
    to torch.optim.AdamW over 60 steps with a changing learning rate, and a training process that uses it never
    imports torch._dynamo (which torch.optim pulls in, ~1.4 s a process)."""
    import subprocess
    import sys

    theirs, ours = adamw_pair()
    assert all(torch.equal(theirs[k], ours[k]) for k in theirs)
    assert not torch.equal(theirs["3.bias"], torch.zeros_like(theirs["3.bias"]))
    with pytest.raises(ValueError, match="no parameters"):
        from cmcr.optim import AdamW

        AdamW([])
    script = ("import sys\n"
              "import torch\n"
              "from cmcr.optim import AdamW\n"
              "from cmcr.graph import train_connection\n"
              "net = torch.nn.Linear(4, 2); opt = AdamW(net.parameters())\n"
              "net(torch.randn(3, 4)).sum().backward(); opt.step(0.1)\n"
              "print('torch._dynamo' in sys.modules)\n")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False", res.stderr


def test_stage_training_does_not_depend_on_the_machines_cores(tmp_path):
    """Issue 24, point 1: the same training gave other weights with 1 and 2 threads (0.051 apart), so results
    depended on the machine. Stages now compute with a fixed thread count (cmcr.reproducibility.STAGE_THREADS): a stage
    on a 1-core machine (`taskset -c 0`) and on this 2-core one writes the same bytes. The control shows the
    dependence is real: the same training with 2 threads differs from 1 thread."""
    import hashlib
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    script = tmp_path / "stage.py"
    script.write_text(f"""
import sys
sys.path[:0] = [{str(root / "stages")!r}, {str(root / "tests")!r}]
from common import run

def main(out: str) -> None:
    import torch
    from conftest import toy_world
    from cmcr.artifacts import save_torch
    from cmcr.config import ConnectionConfig, LossConfig, ProjectorConfig, TrainConfig
    from conftest import PAPER_LINKS as CONNECTIONS
    from cmcr.graph import train_connection
    data, _ = toy_world(n_train=2000, n_memory=800, n_eval=10, dim=64)
    conn = CONNECTIONS["clip_clap"]
    config = ConnectionConfig(connection=conn, loss=LossConfig(intra_spaces=conn.spaces),
                              projector=ProjectorConfig(in_dims={{"clip": 64, "clap": 64}}, hidden_dim=256, out_dim=64),
                              train=TrainConfig(epochs=2, batch_size=128, lr=1e-3, seed=0, device="cpu"))
    save_torch(out, {{s: m.state_dict() for s, m in train_connection(data, config).projectors.items()}})
    print("threads", torch.get_num_threads())

run(main)
""")
    env = {k: v for k, v in os.environ.items() if k not in ("CMCR_NUM_THREADS", "OMP_NUM_THREADS",
                                                            "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}

    def train(name, prefix=(), **extra):
        out = subprocess.run([*prefix, sys.executable, str(script), str(tmp_path / name)], capture_output=True,
                             text=True, env=env | extra)
        assert out.returncode == 0, out.stderr[-2000:]
        return hashlib.sha256((tmp_path / name).read_bytes()).hexdigest(), out.stdout

    here, log = train("here.pt")
    assert "threads 1" in log
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        one_core, log = train("one_core.pt", prefix=("taskset", "-c", "0"))
        assert one_core == here and "threads 1" in log
    two_threads, _ = train("two.pt", CMCR_NUM_THREADS="2")
    one_thread, _ = train("one.pt", CMCR_NUM_THREADS="1")
    assert one_thread == here
    if (os.cpu_count() or 1) > 1:
        assert two_threads != one_thread  # the dependence the fixed count removes


def test_seeds_side_by_side_train_what_each_trains_alone():
    """The train stage trains a variant's seeds in threads of one process (one per free core): each training
    must give the bytes it gives alone, so the results do not depend on the machine's cores either."""
    import dataclasses

    from cmcr.config import ConnectionConfig, LossConfig, ProjectorConfig, TrainConfig
    from conftest import PAPER_LINKS as CONNECTIONS
    from cmcr.graph import train_connection
    from cmcr.train import train_seeds
    from conftest import toy_world

    data, _ = toy_world(n_train=600, n_memory=300, n_eval=10, dim=32)
    conn = CONNECTIONS["clip_clap"]
    config = ConnectionConfig(connection=conn, loss=LossConfig(intra_spaces=conn.spaces),
                              projector=ProjectorConfig(in_dims={"clip": 32, "clap": 32}, hidden_dim=64, out_dim=32),
                              train=TrainConfig(epochs=2, batch_size=64, lr=1e-3, device="cpu"))

    def one(seed):
        return train_connection(data, dataclasses.replace(config, train=dataclasses.replace(config.train, seed=seed)),
                                progress=False)

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        together = train_seeds(one, [0, 1, 2, 3], workers=3)
        alone = {seed: one(seed) for seed in (3, 1, 0, 2)}
    finally:
        torch.set_num_threads(before)
    assert list(together) == [0, 1, 2, 3]
    for seed in (0, 1, 2, 3):
        for space in ("clip", "clap"):
            for key, value in alone[seed].projectors[space].state_dict().items():
                assert torch.equal(together[seed].projectors[space].state_dict()[key], value), (seed, space, key)
    assert not torch.equal(together[0].projectors["clip"].net[0].weight, together[1].projectors["clip"].net[0].weight)
