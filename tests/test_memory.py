"""Eq. 2 against an independent float64 reference written out term by term."""

import math

import numpy as np
import pytest
import torch

from cmcr.checks import EmbeddingError
from cmcr.config import ConfigError, MemoryConfig
from cmcr.memory import aggregate_memory, aggregate_memory_naive
from conftest import unit


def reference_softmax(q: torch.Tensor, m: torch.Tensor, tau: float) -> torch.Tensor:
    """Eq. 2 literally, in float64, one query at a time."""
    q, m = q.double(), m.double()
    out = torch.empty_like(q)
    for i in range(q.shape[0]):
        sims = [float(q[i] @ m[k]) for k in range(m.shape[0])]
        top = max(sims)
        weights = [math.exp((s - top) / tau) for s in sims]
        total = sum(weights)
        out[i] = sum(w / total * m[k] for k, w in enumerate(weights))
    return out


@pytest.mark.parametrize("qc,mc", [(8, 7), (5, 53), (100, 100), (1, 1), (37, 52)])
def test_softmax_matches_reference_with_odd_chunks(qc, mc):
    q, m = unit(37, 16, seed=1), unit(53, 16, seed=2)
    got = aggregate_memory(q, m, MemoryConfig(temperature=0.05, query_chunk=qc, memory_chunk=mc), device="cpu")
    torch.testing.assert_close(got.double(), reference_softmax(q, m, 0.05), atol=1e-5, rtol=0)


def test_paper_temperature_matches_naive_formula():
    q, m = unit(64, 32, seed=3), unit(300, 32, seed=4)
    got = aggregate_memory(q, m, MemoryConfig(temperature=0.01, query_chunk=10, memory_chunk=33), device="cpu")
    torch.testing.assert_close(got, aggregate_memory_naive(q, m, 0.01), atol=1e-5, rtol=0)
    torch.testing.assert_close(got.double(), reference_softmax(q, m, 0.01), atol=1e-5, rtol=0)


def test_memory_of_one_item_returns_it_for_every_query():
    q, m = unit(9, 8, seed=5), unit(1, 8, seed=6)
    for mode in ("softmax", "argmax", "random"):
        got = aggregate_memory(q, m, MemoryConfig(mode=mode, query_chunk=4), device="cpu")
        torch.testing.assert_close(got, m.expand(9, 8), atol=1e-6, rtol=0)


def test_lazy_shift_recomputes_when_a_later_chunk_dominates():
    # First memory chunk: items nearly orthogonal to the query; last chunk: the query itself.
    # With τ1=0.01 the later logits exceed the first chunk's max by ~100, far past fp32's exp range:
    # the streamed softmax must re-shift instead of overflowing.
    q = unit(4, 16, seed=7)
    filler = unit(40, 16, seed=8)
    filler = filler - (filler @ q[0]).unsqueeze(1) * q[0]  # orthogonal to the first query
    filler = torch.nn.functional.normalize(filler, dim=1)
    m = torch.cat([filler, q[:1]])
    got = aggregate_memory(q, m, MemoryConfig(temperature=0.01, query_chunk=2, memory_chunk=8), device="cpu")
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), reference_softmax(q, m, 0.01), atol=1e-5, rtol=0)
    torch.testing.assert_close(got[0], q[0], atol=1e-5, rtol=0)  # softmax ≈ one-hot on the exact match


def test_argmax_picks_most_similar_item_first_on_ties():
    q, m = unit(20, 8, seed=9), unit(30, 8, seed=10)
    m[17] = m[3]  # a duplicate: the first index must win
    got = aggregate_memory(q, m, MemoryConfig(mode="argmax", query_chunk=6, memory_chunk=7), device="cpu")
    expected = m[[int(np.argmax([float(qi @ mk) for mk in m])) for qi in q]]
    torch.testing.assert_close(got, expected, atol=0, rtol=0)


def test_random_is_seeded_and_draws_memory_rows_uniformly():
    q, m = unit(4000, 4, seed=11), unit(10, 4, seed=12)
    a = aggregate_memory(q, m, MemoryConfig(mode="random", seed=3), device="cpu")
    b = aggregate_memory(q, m, MemoryConfig(mode="random", seed=3), device="cpu")
    c = aggregate_memory(q, m, MemoryConfig(mode="random", seed=4), device="cpu")
    assert torch.equal(a, b) and not torch.equal(a, c)
    index = (a.unsqueeze(1) == m.unsqueeze(0)).all(-1).float().argmax(1)
    assert torch.equal(m[index], a)  # every output is a memory row
    counts = torch.bincount(index, minlength=10).float()
    assert counts.min() > 300 and counts.max() < 500  # uniform: 400 ± 5 sd (sd ≈ 19)


def test_memmap_inputs_and_preallocated_output(tmp_path):
    q, m = unit(50, 16, seed=13), unit(70, 16, seed=14)
    np.save(tmp_path / "q.npy", q.numpy())
    np.save(tmp_path / "m.npy", m.numpy())
    out = np.lib.format.open_memmap(tmp_path / "o.npy", mode="w+", dtype=np.float32, shape=(50, 16))
    res = aggregate_memory(np.load(tmp_path / "q.npy", mmap_mode="r"), np.load(tmp_path / "m.npy", mmap_mode="r"),
                           MemoryConfig(temperature=0.02, query_chunk=16, memory_chunk=32), device="cpu", out=out)
    assert res is out
    torch.testing.assert_close(torch.from_numpy(np.asarray(out)), aggregate_memory_naive(q, m, 0.02), atol=1e-5, rtol=0)


def test_reduced_precision_is_close():
    q, m = unit(30, 32, seed=15), unit(90, 32, seed=16)
    got = aggregate_memory(q, m, MemoryConfig(temperature=0.1, precision="bf16", memory_chunk=40), device="cpu")
    torch.testing.assert_close(got, aggregate_memory_naive(q, m, 0.1), atol=5e-2, rtol=0)


@pytest.mark.parametrize("tau", [0, -0.01, float("nan")])
def test_bad_temperature_is_refused(tau):
    with pytest.raises(ConfigError, match="temperature"):
        MemoryConfig(temperature=tau)


def test_bad_inputs_fail_before_compute():
    q, m = unit(5, 8), unit(6, 8, seed=1)
    with pytest.raises(EmbeddingError, match="memory: is empty"):
        aggregate_memory(q, m[:0], device="cpu")
    bad = q.clone()
    bad[2, 3] = float("nan")
    with pytest.raises(EmbeddingError, match=r"queries: contains NaN.*row 2"):
        aggregate_memory(bad, m, device="cpu")
    with pytest.raises(EmbeddingError, match="memory: has dimension 4, expected 8"):
        aggregate_memory(q, unit(6, 4), device="cpu")
    with pytest.raises(EmbeddingError, match="L2 norm"):
        aggregate_memory(q, m * 2, device="cpu")
    with pytest.raises(ConfigError, match="memory.mode"):
        MemoryConfig(mode="mean")


@pytest.mark.parametrize("kernel", ["sdpa", "streamed"])
@pytest.mark.parametrize("order", ["random", "clustered", "ordered"])
def test_both_kernels_are_exact_on_any_memory_order(kernel, order):
    """≤ 1e-5 from the float64 formula for PyTorch's fused attention and our streamed softmax, also on tightly
    clustered and class-ordered memories (where a first chunk's max is far below a row's true max)."""
    g = torch.Generator().manual_seed(20)
    if order == "random":
        m = torch.randn(700, 32, generator=g, dtype=torch.float64)
    else:
        centres = torch.randn(7, 32, generator=g, dtype=torch.float64)
        label = torch.randint(7, (700,), generator=g)
        label = label.sort().values if order == "ordered" else label
        m = centres[label] * 3 + torch.randn(700, 32, generator=g, dtype=torch.float64)
    q = torch.randn(50, 32, generator=g, dtype=torch.float64) + (3 * m[:50] if order != "random" else 0)
    q, m = (torch.nn.functional.normalize(x, dim=1).float() for x in (q, m))
    got = aggregate_memory(q, m, MemoryConfig(temperature=0.01, query_chunk=16, memory_chunk=64, kernel=kernel),
                           device="cpu")
    torch.testing.assert_close(got.double(), reference_softmax(q, m, 0.01), atol=1e-5, rtol=0)


def test_kernel_choice():
    from cmcr.memory import resolve_kernel

    assert resolve_kernel(MemoryConfig(), torch.device("cpu")) == "sdpa"
    assert resolve_kernel(MemoryConfig(), torch.device("cuda")) == "streamed"
    assert resolve_kernel(MemoryConfig(precision="bf16"), torch.device("cpu")) == "streamed"
    assert resolve_kernel(MemoryConfig(kernel="streamed"), torch.device("cpu")) == "streamed"
    with pytest.raises(ConfigError, match="memory.kernel"):
        MemoryConfig(kernel="flash")


def test_flush_denormals_reaches_every_intra_op_thread():
    """Inside the block a subnormal input reads as zero in every element of a parallel op (so on every
    worker thread); after it, PyTorch's default is back."""
    from cmcr.device import flush_denormals

    tiny = torch.full((1 << 22,), 1e-39)  # subnormal in fp32; large enough to be split across threads
    (tiny * 1.0).sum()  # the worker threads exist before the block, as in any real process
    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU cannot flush denormals")
    with flush_denormals(torch.device("cpu")):
        assert int((tiny * 1.0 != 0).sum()) == 0
    assert int((tiny * 1.0 != 0).sum()) == tiny.numel()


def test_accelerator_online_softmax_matches_the_float64_formula():
    """The accelerator path (exact running max at every chunk, no host reads), run here on the CPU:
    memory sorted so that each later chunk holds the queries' nearer items (the max moves every chunk),
    τ1 = 0.005 so that exp overflows without a shift, fp32 and bf16 products."""
    from cmcr.memory import _online_softmax_chunk

    q, m = unit(12, 16, seed=1), unit(300, 16, seed=2)
    m = m[torch.argsort(m @ q[0])]  # ascending similarity to query 0
    tau = 0.005
    want = aggregate_memory_naive(q.double(), m.double(), tau)
    chunks = [(m[s:s + 37],) * 2 for s in range(0, 300, 37)]
    got = _online_softmax_chunk(q / tau, chunks, torch.float32)
    assert torch.isfinite(got).all()
    assert (got.double() - want).abs().max() < 1e-5
    got_bf16 = _online_softmax_chunk((q / tau).bfloat16(), [(c.bfloat16(), c.bfloat16()) for c, _ in chunks],
                                     torch.bfloat16)
    assert torch.nn.functional.cosine_similarity(got_bf16.double(), want).min() > 0.99


def test_auto_chunks_resolve_per_device_and_explicit_sizes_win():
    from cmcr.memory import AUTO_CHUNKS, resolve_chunks

    assert resolve_chunks(MemoryConfig(), torch.device("cpu")) == (65536, 4096) == AUTO_CHUNKS["cpu_sdpa"]
    assert resolve_chunks(MemoryConfig(kernel="streamed"), torch.device("cpu")) == (1024, 4096) == AUTO_CHUNKS["cpu"]
    assert resolve_chunks(MemoryConfig(mode="argmax"), torch.device("cpu")) == (1024, 4096)
    assert resolve_chunks(MemoryConfig(), torch.device("cuda")) == (8192, 65536)
    assert resolve_chunks(MemoryConfig(query_chunk=7, memory_chunk="auto"), torch.device("cuda")) == (7, 65536)
    for bad in ("big", 0, -1, 2.5, True):
        with pytest.raises(ConfigError, match="memory.query_chunk"):
            MemoryConfig(query_chunk=bad)


def test_thread_setting():
    from cmcr.device import configure_threads

    before = torch.get_num_threads()
    try:
        assert configure_threads({}) is None and torch.get_num_threads() == before
        assert configure_threads({"CMCR_NUM_THREADS": "1"}) == 1 and torch.get_num_threads() == 1
        assert configure_threads({}, default=2) == 2 and torch.get_num_threads() == 2  # the stages' fixed default
        assert configure_threads({"CMCR_NUM_THREADS": "1"}, default=2) == 1  # the variable wins
        for bad in ("0", "two", "-1"):
            with pytest.raises(ConfigError, match="CMCR_NUM_THREADS must be an integer >= 1"):
                configure_threads({"CMCR_NUM_THREADS": bad})
    finally:
        torch.set_num_threads(before)


def test_finiteness_check_by_sum_misses_nothing_and_allows_overflowing_finite_values():
    """check_matrix sums a block first (a finite sum proves every value finite) and falls back to the
    elementwise check only when the sum is not finite: huge finite values pass, any inf / NaN is found."""
    import numpy as np

    from cmcr.checks import check_matrix

    check_matrix(torch.full((4, 3), 3e38), "huge")  # the sum overflows to inf; every value is finite
    check_matrix(np.full((4, 3), -3e38, dtype=np.float32), "huge")
    for bad in (float("inf"), -float("inf"), float("nan")):
        for x in (torch.zeros(5, 3), np.zeros((5, 3), dtype=np.float32)):
            x[3, 1] = bad
            with pytest.raises(EmbeddingError, match="NaN or infinite values .first bad row 3"):
                check_matrix(x, "x", chunk_rows=2)


@pytest.mark.parametrize("config", [MemoryConfig(), MemoryConfig(kernel="streamed", query_chunk=5, memory_chunk=17),
                                    MemoryConfig(mode="argmax", query_chunk=5, memory_chunk=17),
                                    MemoryConfig(mode="random", seed=3)])
def test_values_from_another_space_weigh_by_the_keys(config):
    """Ex-MCR's cross-space transfer: weights softmax(q·Kᵀ/τ1) from the keys (one space's embeddings of the
    memory items), the sum over the values (the same items in another space, another width): every kernel
    equals the float64 formula, argmax takes the value row of the best key, random the value row of the
    index Eq. 2's random mode draws."""
    q, keys, vals = unit(23, 16, seed=4), unit(60, 16, seed=5), unit(60, 24, seed=6)
    got = aggregate_memory(q, keys, config, values=vals, device="cpu")
    assert got.shape == (23, 24)
    if config.mode == "softmax":
        want = torch.softmax(q.double() @ keys.double().T / config.temperature, 1) @ vals.double()
        assert (got.double() - want).abs().max() < 1e-5
        assert torch.allclose(aggregate_memory_naive(q, keys, config.temperature, values=vals), want.float(), atol=1e-5)
    elif config.mode == "argmax":
        assert torch.equal(got, vals[(q @ keys.T).argmax(1)])
    else:
        rows = aggregate_memory(q, keys, config, device="cpu")  # the same draw picks key rows
        index = [int((keys == r).all(1).nonzero()[0]) for r in rows]
        assert torch.equal(got, vals[index])
    with pytest.raises(EmbeddingError, match="values: has 59 rows but memory has 60"):
        aggregate_memory(q, keys, config, values=vals[:59], device="cpu")
