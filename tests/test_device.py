"""The accelerator paths, checked against the CPU: run on a GPU machine with ``pytest -m device``.

Skipped where the device is absent (CI has no GPU). ``CMCR_TEST_DEVICE`` names the device (default
``cuda``); ``CMCR_TEST_DEVICE=cpu`` runs the same comparisons CPU-against-CPU, which checks the tests
themselves but none of the device code. Tolerances: fp32 on the device must agree with the CPU to
float rounding (TF32 is off by default in PyTorch); reduced precision within the bounds measured for the
same reduced-precision products on the CPU (Eq. 2 with τ1 = 0.01: bf16 min cosine 0.9975, fp16 0.99995).
"""

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cmcr.config import ConnectionConfig, LossConfig, MemoryConfig, NoiseConfig, ProjectorConfig, TrainConfig
from cmcr.memory import aggregate_memory
from conftest import CLIP_CLAP, toy_world

DEVICE = os.environ.get("CMCR_TEST_DEVICE", "cuda")
pytestmark = [
    pytest.mark.device,
    pytest.mark.skipif(DEVICE.startswith("cuda") and not torch.cuda.is_available(), reason="no CUDA device"),
]


def clustered(n: int, g: torch.Generator, centres: torch.Tensor) -> torch.Tensor:
    rows = centres[torch.randint(len(centres), (n,), generator=g)]
    return F.normalize(rows + 0.08 * torch.randn(n, centres.shape[1], generator=g), dim=-1)


def min_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.float().cpu(), b.float().cpu()).min())


def test_memory_aggregation_on_the_device():
    g = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(50, 512, generator=g), dim=-1)
    queries, memory = clustered(3000, g, centres), clustered(9000, g, centres)
    config = MemoryConfig(query_chunk=1000, memory_chunk=4096)
    cpu = aggregate_memory(queries, memory, config, device="cpu")
    on_device = aggregate_memory(queries, memory, config, device=DEVICE)
    assert on_device.device.type == "cpu" and on_device.dtype == torch.float32  # results come back to the host
    assert float((on_device - cpu).abs().max()) < 1e-4
    for precision, bound in (("bf16", 0.99), ("fp16", 0.999)):
        reduced = aggregate_memory(queries, memory, MemoryConfig(query_chunk=1000, memory_chunk=4096,
                                                                 precision=precision), device=DEVICE)
        assert min_cosine(reduced, cpu) > bound, precision
    for mode in ("argmax", "random"):
        mode_cfg = MemoryConfig(mode=mode, query_chunk=1000, memory_chunk=4096)
        assert torch.equal(aggregate_memory(queries, memory, mode_cfg, device=DEVICE),
                           aggregate_memory(queries, memory, mode_cfg, device="cpu"))


def test_cross_space_aggregation_and_extend_training_on_the_device():
    """Ex-MCR's Eq. 2 with values from another space (streamed kernel on the device) and a leaf's training there."""
    from cmcr.exmcr import modality_centric_data, stack_centres, train_leaf

    g = torch.Generator().manual_seed(1)
    centres = F.normalize(torch.randn(40, 64, generator=g), dim=-1)
    q, keys = clustered(2000, g, centres), clustered(5000, g, centres)
    values = F.normalize(torch.randn(5000, 48, generator=g), dim=-1)
    config = MemoryConfig(query_chunk=700, memory_chunk=1500)
    cpu = aggregate_memory(q, keys, config, device="cpu", values=values)
    assert float((aggregate_memory(q, keys, config, device=DEVICE, values=values) - cpu).abs().max()) < 1e-4
    shared = {"clip": clustered(600, g, centres), "clap": clustered(600, g, centres)}
    memory_sets = {"clip": clustered(400, g, centres), "clap": clustered(500, g, centres)}
    aggregates = {s: aggregate_memory(shared[s], memory_sets[s], MemoryConfig(), device="cpu") for s in shared}
    tuples = stack_centres(modality_centric_data(CLIP_CLAP, "clap", shared, memory_sets, aggregates, MemoryConfig(),
                                                 device=DEVICE))
    train = ConnectionConfig(connection=CLIP_CLAP, projector=ProjectorConfig(hidden_dim=128, out_dim=64),
                             train=TrainConfig(epochs=3, batch_size=256, device=DEVICE))
    result = train_leaf("clap", tuples, lambda x: F.normalize(x, dim=-1), train, progress=False)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    again = train_leaf("clap", tuples, lambda x: F.normalize(x, dim=-1), train, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(result.projectors["clap"].state_dict().values(),
                                                 again.projectors["clap"].state_dict().values()))


def test_farthest_point_sampling_on_the_device_picks_the_cpus_points():
    from cmcr.encoders.pointbert import farthest_point_sample

    clouds = torch.randn(8, 5000, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(farthest_point_sample(clouds.to(DEVICE), 2048).cpu(), farthest_point_sample(clouds, 2048))


def toy_config(epochs: int) -> ConnectionConfig:
    """A small CLIP–CLAP connection on the toy world, trained on the device under test."""
    return ConnectionConfig(
        connection=CLIP_CLAP,
        projector=ProjectorConfig(in_dims={"clip": 32, "clap": 32}, hidden_dim=64, out_dim=32),
        noise=NoiseConfig(var=0.004),
        loss=LossConfig(shared_temperature=0.05, pseudo_temperature=0.05, lambda_intra=0.1),
        train=TrainConfig(epochs=epochs, batch_size=256, lr=3e-3, seed=0, device=DEVICE))


def test_training_on_the_device_learns_and_is_reproducible():
    from cmcr.metrics.retrieval import bidirectional_retrieval, random_expectation
    from cmcr.graph import train_connection

    data, ev = toy_world()
    config = toy_config(epochs=15)
    first, second = train_connection(data, config, progress=False), train_connection(data, config, progress=False)
    losses = [h["loss"] for h in first.history["joint"]]
    assert losses[-1] < 0.8 * losses[0]
    np.testing.assert_allclose(losses, [h["loss"] for h in second.history["joint"]], rtol=1e-5)
    with torch.no_grad():
        audio = first.projectors["clap"].embed(ev["clap_audio"])  # projectors come back on the CPU
        image = first.projectors["clip"].embed(ev["clip_image"])
    assert bidirectional_retrieval(audio, image)["A2I"]["mAP"] > 4 * random_expectation(200)["mAP"]


def test_two_trainings_on_one_gpu_give_the_same_bytes(tmp_path):
    """Issue 29, point 5: on a GPU the training path turns on deterministic algorithms and cuBLAS's fixed workspace
    (cmcr.device.deterministic_cuda), so two trainings (and two Eq. 2 aggregations) on one GPU give the same bytes —
    the scope README "Threads and kernel paths" states (same GPU model, same versions); not the CPU's bytes."""
    import hashlib

    from cmcr.artifacts import save_torch
    from cmcr.graph import train_connection

    data, _ = toy_world()
    config = toy_config(epochs=6)
    digests = []
    for run in range(2):
        save_torch(tmp_path / f"run{run}.pt", train_connection(data, config, name="K", progress=False).checkpoint())
        digests.append(hashlib.sha256((tmp_path / f"run{run}.pt").read_bytes()).hexdigest())
    if DEVICE.startswith("cuda"):
        assert torch.are_deterministic_algorithms_enabled()
        assert os.environ.get("CUBLAS_WORKSPACE_CONFIG") == ":4096:8"
    assert digests[0] == digests[1]
    g = torch.Generator().manual_seed(1)
    queries, memory = F.normalize(torch.randn(2000, 64, generator=g), dim=-1), F.normalize(torch.randn(7000, 64, generator=g), dim=-1)
    config = MemoryConfig(query_chunk=512, memory_chunk=2048)
    assert torch.equal(aggregate_memory(queries, memory, config, device=DEVICE),
                       aggregate_memory(queries, memory, config, device=DEVICE))


@pytest.mark.parametrize("precision,bound", [("fp32", 0.9999), ("bf16", 0.99), ("fp16", 0.99)])
def test_encoders_on_the_device_agree_with_the_cpu(official_dir, tmp_path, precision, bound):
    """CLIP, CLAP and ULIP-2 (random weights from one seed) through the sharded extraction with loader
    workers: the device's embeddings against the CPU's, in fp32 and under autocast."""
    from cmcr.encoders.pointbert import PointBertConfig
    from cmcr.extraction import extract_sharded
    from cmcr.encoders.base import build_space

    runs = {
        "clip": ("image", [str(official_dir / f"{n}.jpeg") for n in ("BBQ", "toilet", "train")], {}),
        "clap": ("audio", [str(official_dir / f"{n}.wav") for n in ("BBQ", "toilet", "train")], {}),
        "ulip": ("points", [str(official_dir / f"{n}.npy") for n in ("BBQ", "toilet")],
                 {"trust_pickled_points": True, "config": PointBertConfig(npoints=4096, num_group=128)}),
    }
    for name, (modality, items, extra) in runs.items():
        embeddings = {}
        for device, prec in (("cpu", "fp32"), (DEVICE, precision)):
            space = build_space(name, allow_random=True, device=device, precision=prec, **extra)
            out = tmp_path / f"{name}-{device}-{prec}"
            summary = extract_sharded(space, modality, items, [str(i) for i in range(len(items))], out, name,
                                      shard_size=2, batch_size=2, num_workers=2, progress=False)
            assert summary.embedded == len(items) and summary.failed == 0
            embeddings[device] = torch.from_numpy(np.load(out / f"{name}.npy"))
        assert min_cosine(embeddings[DEVICE], embeddings["cpu"]) > bound, (name, precision)


@pytest.mark.skipif(not (DEVICE.startswith("cuda") and torch.cuda.device_count() >= 2), reason="needs 2+ GPUs")
def test_one_worker_per_gpu_merges_to_the_bytes_of_one_gpu(tmp_path):
    """Issue 23, point 4 on GPUs: paper.extraction.devices = 2 (one spawned worker per GPU) writes the files
    one process on one GPU writes (ULIP-2 Point-BERT with random weights; clouds of several sizes)."""
    import filecmp

    from cmcr.encoders.pointbert import PointBertConfig  # noqa: F401  (the real config, 2 blocks below)
    from cmcr.extraction import ExtractionJob, extract_on_devices

    rng = np.random.default_rng(0)
    paths = []
    for i, n in enumerate([9000, 2048, 1000, 9000, 8192, 4000] * 3):
        paths.append(str(tmp_path / f"c{i}.npy"))
        np.save(paths[-1], rng.normal(size=(n, 3)).astype(np.float32))
    jobs = [ExtractionJob("ulip_points", "points", paths, [f"c{i}" for i in range(len(paths))])]
    kwargs = {"allow_random": True, "seed": 0}
    options = dict(shard_size=4, batch_size=3, progress=False)
    one = extract_on_devices("ulip", kwargs, jobs, tmp_path / "one", ["cuda:0"], **options)
    two = extract_on_devices("ulip", kwargs, jobs, tmp_path / "two", ["cuda:0", "cuda:1"], **options)
    assert one["ulip_points"].embedded == two["ulip_points"].embedded == len(paths)
    for suffix in (".parquet", ".failures.parquet"):
        assert filecmp.cmp(tmp_path / "one" / f"ulip_points{suffix}", tmp_path / "two" / f"ulip_points{suffix}")
    a, b = np.load(tmp_path / "one" / "ulip_points.npy"), np.load(tmp_path / "two" / "ulip_points.npy")
    np.testing.assert_allclose(a, b, atol=1e-5)  # two GPUs of one model: equal to kernel rounding
