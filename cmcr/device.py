"""Where and in which precision things run: device resolution, autocast settings, seeded initialisation."""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from cmcr.config import PRECISIONS
from cmcr.reproducibility import CUBLAS_WORKSPACE, requested_threads


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto``/None → CUDA when present, else CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def amp_settings(precision: str, device: torch.device) -> dict[str, Any]:
    """``torch.autocast`` arguments: mixed precision (``bf16`` / ``fp16``) on CUDA only; fp32 elsewhere."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be fp32, bf16 or fp16, got {precision!r}")
    enabled = precision != "fp32" and device.type == "cuda"
    return {"dtype": torch.bfloat16 if precision == "bf16" else torch.float16, "enabled": enabled}


@contextlib.contextmanager
def flush_denormals(device: torch.device) -> Iterator[None]:
    """On the CPU, treat subnormal floats as zero inside the block, on every intra-op thread.

    With τ1 = 0.01 most softmax weights over a clustered or class-ordered memory are exp(−(s_max − s)/τ1)
    below 1.2e-38: subnormal numbers, which x86 CPUs multiply 10–100× slower than normal ones (measured:
    PyTorch's fused attention 5–6× and the naive formula 40× slower on an ordered memory than on a random
    one; ``benchmarks/RESULTS.md``). Flushing them to zero changes no weight by more than 1.2e-38 relative to
    the largest (1): the result is the same to fp32 precision (tested against the float64 formula).

    ``torch.set_flush_denormal`` sets only the calling thread's mode, and PyTorch's OpenMP workers keep the
    mode they started with; so it is also run once on each worker, through a parallel region of PyTorch's
    own libgomp. Restored to PyTorch's default (off) when the block ends.
    """
    if device.type != "cpu" or not _flush_denormal_everywhere(True):
        yield
        return
    try:
        yield
    finally:
        _flush_denormal_everywhere(False)


_GOMP: list = []  # [libgomp handle or None], found once


def _torch_libgomp():
    """PyTorch's OpenMP runtime (the libgomp loaded from torch's own lib folder), or None. Other packages
    may load their own libgomp (faiss-cpu does): its thread pool is not PyTorch's."""
    if not _GOMP:
        handle = None
        torch_lib = os.path.realpath(os.path.join(os.path.dirname(torch.__file__), "lib"))
        try:
            # the wheel's own copy (libtorch_cpu links it through its rpath, so it is the one loaded): a
            # directory listing, ~1 ms cheaper than reading the process's memory map
            bundled = sorted(e.path for e in os.scandir(torch_lib) if e.name.startswith("libgomp") and ".so" in e.name)
            if bundled:
                path = bundled[0]
            else:
                with open("/proc/self/maps") as maps:  # Linux: the loaded libraries' paths
                    paths = {line.split()[-1] for line in maps if "libgomp" in line.split()[-1].rsplit("/", 1)[-1]}
                path = paths.pop() if len(paths) == 1 else None  # a system libgomp that torch links against
            if path:
                handle = ctypes.CDLL(path)
                handle.GOMP_parallel.restype = None
        except (OSError, AttributeError):
            handle = None
        _GOMP.append(handle)
    return _GOMP[0]


def _flush_denormal_everywhere(on: bool) -> bool:
    """``torch.set_flush_denormal(on)`` on this thread and on each OpenMP worker; False if the CPU cannot."""
    if not torch.set_flush_denormal(on):
        return False
    gomp = _torch_libgomp()
    threads = torch.get_num_threads()
    if gomp is not None and threads > 1:
        callback = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(lambda _: torch.set_flush_denormal(on))
        gomp.GOMP_parallel(callback, None, ctypes.c_uint(threads), ctypes.c_uint(0))
    return True


@contextlib.contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Build a model's random initial weights from ``seed`` without touching the caller's RNG state:
    a space built with ``allow_random`` (tests, benchmarks, random-weight baselines) is reproducible."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def configure_threads(env: Mapping[str, str] | None = None, default: int | None = None) -> int | None:
    """Apply ``CMCR_NUM_THREADS`` (an integer >= 1), else ``default`` (None: PyTorch's own, one thread per core),
    to PyTorch's intra-op thread pool; return the count set (None if neither).

    PyTorch starts one thread per core. Several processes on one machine (DVC's parallel stages, a shared
    node, loader workers) then oversubscribe the CPU: a training step ran 7× slower that way than with one
    thread per process. The stages call this with ``default=STAGE_THREADS`` (:mod:`cmcr.reproducibility`) (results independent of the
    machine's core count), the ``cmcr`` command without (interactive work uses the cores).
    """
    threads = requested_threads(os.environ if env is None else env)
    threads = default if threads is None else threads
    if threads is not None:
        torch.set_num_threads(threads)
    return threads


def deterministic_cuda(device: torch.device) -> bool:
    """For a CUDA device: deterministic algorithms (``torch.use_deterministic_algorithms``, warning where an op
    has no deterministic kernel), no cuDNN autotuning, and cuBLAS's fixed workspace (``CUBLAS_WORKSPACE_CONFIG``,
    read when cuBLAS makes its handle, so set here before the first product). Two runs on one GPU model with the
    same versions then give the same bytes (``pytest -m device``); a GPU's bytes are not the CPU's. Returns
    whether it applied (False on other devices)."""
    if device.type != "cuda":
        return False
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    return True
