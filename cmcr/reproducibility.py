"""The same numbers on every machine: fixed CPU threads and kernel paths for the pipeline's stages, and the
provenance of what the committed numbers were made with.

CPU results depend on two things a processor decides unless told: how many threads split a sum (issue 24: a fixed
count, ``STAGE_THREADS``) and which code path a library picks for the processor. PyTorch's ATen kernels (softmax,
log-softmax, reductions…) have SSE/AVX2/AVX-512 builds; Intel MKL — PyTorch's BLAS and, through VML, its ``exp`` and
``log`` — picks a branch and cache blocking per processor *and vendor*; oneDNN picks per ISA, numpy's bundled OpenBLAS
per core type and numpy's own loops per SIMD extension. Each choice sums or rounds in another order, and training
amplifies the last bits (the stand-in CLIP's final loss was 1.6550 on an AVX2 AMD EPYC and 1.6360 on an AVX-512 one,
issue 29). So every stage pins each of them (:func:`pinned_kernels`):

- ``ATEN_CPU_CAPABILITY=avx2``, ``ONEDNN_MAX_CPU_ISA=AVX2``, ``OPENBLAS_CORETYPE=Haswell``,
  ``NPY_DISABLE_CPU_FEATURES`` (numpy's dispatch targets above AVX2): the AVX2 path, which every x86-64 processor
  of the last decade has, chosen by instruction set whatever the vendor;
- ``MKL_CBWR=COMPATIBLE``: MKL's conditional numerical reproducibility on its SSE2 branch. It is the least strict
  branch that gives the same bytes on Intel and AMD processors: measured with the processor emulated (qemu-user,
  ``benchmarks/cross_cpu_check.sh``), MKL on AMD takes one path whatever ``MKL_CBWR`` names but ``COMPATIBLE``, while
  on Intel ``AVX2`` (and ``AVX2,STRICT``, ``SSE4_2``) give other SGEMM or VML ``exp``/``log`` bytes than on AMD;
  ``COMPATIBLE`` gives the same on both. It costs SGEMM speed (half, measured), not accuracy.

The libraries read these when they load or first dispatch, so they must be in the environment before numpy or torch
is imported: :func:`pin_process` runs first in every stage (``stages/common.py`` is every stage script's first
import, a test keeps it so), and if a stage process has already loaded them it starts itself again with the pins, so
a stage's import order cannot change its numbers. The pins override the user's shell; ``CMCR_<NAME>`` (e.g.
``CMCR_MKL_CBWR=AUTO`` for MKL's fastest path) overrides a pin on purpose, and the stage's log and
:func:`provenance` say so. A processor without AVX2 and FMA computes with its own paths (an AVX2 pin would stop it
with an illegal instruction), with one warning that its numbers differ from the committed ones.

This module imports neither numpy nor torch at load (it runs before them); :func:`provenance` imports them when called.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

from cmcr.config import ConfigError

#: the CPU threads every pipeline stage computes with unless ``CMCR_NUM_THREADS`` says otherwise. CPU results
#: depend on the thread count (a matrix product or a reduction split across threads sums in another order: the
#: same training gave weights 0.05 apart with 1 and 2 threads), so the stages use a fixed count, the same on
#: every machine, and one that never oversubscribes a shared machine.
STAGE_THREADS = 1

#: the thread pools of the native libraries (OpenMP: PyTorch and MKL; numpy's OpenBLAS), read when they load
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

#: numpy's SIMD dispatch targets above AVX2 (numpy 1.26 and 2.x names; numpy ignores names it does not dispatch)
NUMPY_ABOVE_AVX2 = ("AVX512F", "AVX512CD", "AVX512_KNL", "AVX512_KNM", "AVX512_SKX", "AVX512_CLX", "AVX512_CNL",
                    "AVX512_ICL", "AVX512_SPR")

#: the native libraries that read the pins when they load: pins set after either is imported come too late
NATIVE_MODULES = ("numpy", "torch")

#: set in a stage process that :func:`pin_process` started again with the pins (guards against a loop)
REEXEC_MARK = "CMCR_PINNED_REEXEC"

#: cuBLAS's deterministic workspace setting (NVIDIA's cuBLAS docs, "Results reproducibility"), set for GPU runs
CUBLAS_WORKSPACE = ":4096:8"


def requested_threads(environ: Mapping[str, str]) -> int | None:
    """``CMCR_NUM_THREADS`` (an integer >= 1) from ``environ``, or None when it is not set."""
    raw = environ.get("CMCR_NUM_THREADS", "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"CMCR_NUM_THREADS must be an integer >= 1, got {raw!r}")
    return int(raw)


@dataclass(frozen=True)
class Processor:
    """What the kernel choice depends on: the CPU's model and instruction-set flags (``/proc/cpuinfo`` on Linux)."""

    model: str
    vendor: str
    machine: str
    flags: frozenset[str] = field(default_factory=frozenset)

    @property
    def feature_class(self) -> str:
        """``avx512`` (AVX-512 F/BW/VL/DQ, the set PyTorch's AVX-512 build needs), ``avx2`` (AVX2 + FMA),
        ``pre-avx2`` (an x86-64 without them), or ``unknown`` (flags not readable, or not x86-64)."""
        if self.machine not in ("x86_64", "AMD64") or not self.flags:
            return "unknown"
        if not {"avx2", "fma"} <= self.flags:
            return "pre-avx2"
        return "avx512" if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= self.flags else "avx2"

    def as_dict(self) -> dict[str, str]:
        return {"model": self.model, "vendor": self.vendor, "machine": self.machine,
                "feature_class": self.feature_class}


def read_processor(cpuinfo: str | Path = "/proc/cpuinfo") -> Processor:
    """This machine's processor: model name, vendor and flags of the first CPU listed in ``cpuinfo`` (Linux); on
    other systems (no such file) the model from :mod:`platform` and no flags (feature class ``unknown``)."""
    fields: dict[str, str] = {}
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.split("\n\n", 1)[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return Processor(model=fields.get("model name") or platform.processor() or "unknown",
                     vendor=fields.get("vendor_id", "unknown"), machine=platform.machine(),
                     flags=frozenset(fields.get("flags", "").split()))


def pinned_kernels(processor: Processor) -> dict[str, str]:
    """The code-path pins for ``processor`` where it has AVX2 + FMA — the AVX2 path of ATen, oneDNN, OpenBLAS and
    numpy, MKL's vendor-independent COMPATIBLE branch — so AVX2 and AVX-512, Intel and AMD processors compute the
    same bytes; none where it has not (its own paths; see :func:`kernel_warning`)."""
    if processor.feature_class not in ("avx2", "avx512"):
        return {}
    return {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "AVX2",
            "OPENBLAS_CORETYPE": "Haswell", "NPY_DISABLE_CPU_FEATURES": " ".join(NUMPY_ABOVE_AVX2)}


def kernel_warning(processor: Processor) -> str | None:
    """The one warning for a processor whose numbers cannot equal the committed ones, or None."""
    if processor.feature_class in ("avx2", "avx512"):
        return None
    what = ("has no AVX2 + FMA" if processor.feature_class == "pre-avx2"
            else "could not be identified as an x86-64 processor with AVX2 + FMA")
    return (f"this processor ({processor.model}) {what}: the stages compute with its own kernel paths, so its "
            f"numbers will differ from the committed ones (made with the pinned paths; metrics/provenance.json)")


@dataclass(frozen=True)
class StageEnvironment:
    """The environment a stage computes in: ``values`` (variable → value), and ``overridden`` (variable → the
    ``CMCR_…`` variable that set it instead of the default)."""

    values: dict[str, str]
    overridden: dict[str, str]
    threads: int
    processor: Processor

    @property
    def kernels(self) -> dict[str, str]:
        return {k: v for k, v in self.values.items() if k not in THREAD_VARIABLES}

    def describe(self) -> str:
        """One log line: threads, the kernel paths, and what changed them on purpose."""
        if not self.kernels:
            paths = "this processor's own kernel paths"
        elif not set(self.overridden) - set(THREAD_VARIABLES):
            paths = "the pinned kernel paths"
        else:
            paths = "kernel paths set by hand"
        line = (f"computing with {self.threads} CPU thread(s) and {paths} on {self.processor.model} "
                f"({self.processor.feature_class})")
        if self.overridden:
            changed = ", ".join(f"{variable}={self.values[name]}" for name, variable in sorted(self.overridden.items())
                                if name != "OPENBLAS_NUM_THREADS" and name != "MKL_NUM_THREADS")
            return line + f"; changed on purpose ({changed}): numbers may differ from the committed ones"
        return line + (": the same numbers on every machine" if self.kernels else "")


def stage_environment(environ: Mapping[str, str] | None = None, processor: Processor | None = None) -> StageEnvironment:
    """The thread count (``CMCR_NUM_THREADS``, else :data:`STAGE_THREADS`) and the kernel pins for ``processor``,
    each overridable by ``CMCR_<VARIABLE>`` in ``environ`` — never by the plain variable, so a user's shell cannot
    change the numbers by accident."""
    environ = os.environ if environ is None else environ
    processor = processor or read_processor()
    asked = requested_threads(environ)
    threads = STAGE_THREADS if asked is None else asked
    values = dict.fromkeys(THREAD_VARIABLES, str(threads))
    overridden = dict.fromkeys(THREAD_VARIABLES, "CMCR_NUM_THREADS") if asked is not None else {}
    for name, value in pinned_kernels(processor).items():
        mine = environ.get(f"CMCR_{name}")
        values[name] = value if mine is None else mine
        if mine is not None:
            overridden[name] = f"CMCR_{name}"
    return StageEnvironment(values=values, overridden=overridden, threads=threads, processor=processor)


def pin_process(environ: MutableMapping[str, str] | None = None,
                modules: Mapping[str, object] | None = None) -> StageEnvironment:
    """Put the stage environment (:func:`stage_environment`) into this process, before numpy or torch load.

    If the process has already loaded either with other values, they can no longer apply, so it starts itself
    again (``os.execve``, same arguments) with them: what it computes cannot depend on its import order. A second
    mismatch after that is an error (:data:`REEXEC_MARK` guards against a loop)."""
    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    env = stage_environment(environ)
    stale = sorted(k for k, v in env.values.items() if environ.get(k) != v)
    if stale and any(m in modules for m in NATIVE_MODULES):
        if environ.get(REEXEC_MARK):
            raise RuntimeError(f"the stage environment did not take effect after a restart ({', '.join(stale)})")
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], {**environ, **env.values, REEXEC_MARK: "1"})
    environ.update(env.values)
    return env


def is_stage_script(script: str | Path) -> bool:
    """Whether ``script`` (a process's ``sys.argv[0]``) is a pipeline stage: a file in a ``stages`` folder."""
    return bool(str(script)) and Path(script).resolve().parent.name == "stages"


def _library_versions() -> dict[str, str]:
    import numpy
    import torch

    config = torch.__config__.show()
    mkl = re.search(r"Math Kernel Library Version ([\d.]+)", config)
    onednn = re.search(r"MKL-DNN (v[\d.]+)", config)
    try:
        blas = numpy.show_config(mode="dicts")["Build Dependencies"]["blas"]
        openblas = f"{blas.get('name', '?')} {blas.get('version', '?')}"
    except (TypeError, KeyError):
        openblas = "unknown"
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
            "mkl": mkl.group(1) if mkl else "none", "onednn": onednn.group(1) if onednn else "none",
            "numpy_blas": openblas}


def provenance(environ: Mapping[str, str] | None = None, processor: Processor | None = None) -> dict:
    """What the stages compute with on this machine (``metrics/provenance.json``, ``cmcr provenance``): the
    processor and its feature class, the pinned settings and what overrode them, the thread count, the library
    versions, the kernel path PyTorch reports, and the device training takes (``auto``: CUDA when present — then
    the GPU model and the determinism settings)."""
    import torch

    env = stage_environment(environ, processor)
    record = {
        "processor": env.processor.as_dict(),
        "threads": env.threads,
        "pinned": env.kernels,
        "overridden": env.overridden,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "versions": _library_versions(),
    }
    warning = kernel_warning(env.processor)
    if warning:
        record["warning"] = warning
    if torch.cuda.is_available():
        record["device"] = {"kind": "cuda", "gpu": torch.cuda.get_device_name(0), "cuda": torch.version.cuda,
                            "cudnn": str(torch.backends.cudnn.version()), "deterministic_algorithms": True,
                            "CUBLAS_WORKSPACE_CONFIG": CUBLAS_WORKSPACE}
    else:
        record["device"] = {"kind": "cpu"}
    return record


def measured_provenance(environ: Mapping[str, str] | None = None) -> dict:
    """:func:`provenance` as a stage sees it: measured in a fresh Python process with the stage environment (this
    process may have loaded torch with other kernel paths; ``cmcr provenance`` runs here)."""
    environ = dict(os.environ if environ is None else environ)
    env = stage_environment(environ)
    code = "import json; from cmcr.reproducibility import provenance; print(json.dumps(provenance()))"
    out = subprocess.run([sys.executable, "-c", code], env={**environ, **env.values}, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"measuring the stage environment failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
