"""Issue 29: the same numbers on every machine — fixed CPU kernel paths for every stage, their provenance.

The end-to-end check (a training stage and the stand-in stage, run with an environment that asks for other
dispatches, write the bytes of the plain run; a deliberate CMCR_… override changes them) is in
tests/test_pipeline.py, on the reduced demo repository; here the pieces, each against a hand-written case.
"""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cmcr.config import ConfigError
from cmcr.reproducibility import (NUMPY_ABOVE_AVX2, STAGE_THREADS, THREAD_VARIABLES, Processor, is_stage_script,
                                  kernel_warning, pin_process, pinned_kernels, read_processor, stage_environment)

ROOT = Path(__file__).resolve().parents[1]

ZEN2 = """processor	: 0
vendor_id	: AuthenticAMD
cpu family	: 23
model		: 49
model name	: AMD EPYC 7B12
flags		: fpu vme sse sse2 ssse3 fma cx16 sse4_1 sse4_2 avx f16c avx2 bmi2

processor	: 1
vendor_id	: AuthenticAMD
model name	: AMD EPYC 7B12
flags		: fpu vme sse sse2 ssse3 fma cx16 sse4_1 sse4_2 avx f16c avx2 bmi2 avx512f avx512bw avx512vl avx512dq
"""
SKYLAKE_X = """vendor_id	: GenuineIntel
model name	: Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz
flags		: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 avx512f avx512dq avx512cd avx512bw avx512vl
"""
IVY_BRIDGE = """vendor_id	: GenuineIntel
model name	: Intel(R) Xeon(R) CPU E5-2670 v2 @ 2.50GHz
flags		: fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c
"""


def processor(tmp_path: Path, text: str) -> Processor:
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    found = read_processor(path)
    return Processor(found.model, found.vendor, "x86_64", found.flags)  # as on an x86-64 machine, wherever run


def test_processors_are_read_and_classed_from_their_first_cpu(tmp_path):
    zen2 = processor(tmp_path, ZEN2)
    assert (zen2.model, zen2.vendor, zen2.feature_class) == ("AMD EPYC 7B12", "AuthenticAMD", "avx2")  # CPU 0's flags
    assert processor(tmp_path, SKYLAKE_X).feature_class == "avx512"
    assert processor(tmp_path, IVY_BRIDGE).feature_class == "pre-avx2"
    missing = read_processor(tmp_path / "absent")  # not Linux: no flags, no class
    assert missing.flags == frozenset() and missing.feature_class == "unknown"
    arm = Processor("Neoverse", "ARM", "aarch64", frozenset({"avx2", "fma"}))
    assert arm.feature_class == "unknown"


def test_avx2_and_avx512_processors_get_the_same_pins_and_older_ones_none_with_one_warning(tmp_path):
    zen2, skylake, ivy = (processor(tmp_path, t) for t in (ZEN2, SKYLAKE_X, IVY_BRIDGE))
    pins = pinned_kernels(zen2)
    assert pins == pinned_kernels(skylake) == {
        "ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "AVX2", "OPENBLAS_CORETYPE": "Haswell",
        "NPY_DISABLE_CPU_FEATURES": " ".join(NUMPY_ABOVE_AVX2)}
    assert "AVX2" not in NUMPY_ABOVE_AVX2 and "AVX512F" in NUMPY_ABOVE_AVX2 and "AVX512_SKX" in NUMPY_ABOVE_AVX2
    assert kernel_warning(zen2) is None and kernel_warning(skylake) is None
    assert pinned_kernels(ivy) == {}  # an AVX2 pin would stop it with an illegal instruction
    warning = kernel_warning(ivy)
    assert "E5-2670 v2" in warning and "no AVX2" in warning and "differ from the committed ones" in warning
    env = stage_environment({}, ivy)
    assert env.kernels == {} and "own kernel paths" in env.describe()


def test_the_users_shell_cannot_change_the_numbers_but_cmcr_variables_can_and_say_so(tmp_path):
    zen2 = processor(tmp_path, ZEN2)
    shell = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "AVX2", "OMP_NUM_THREADS": "8",
             "OPENBLAS_CORETYPE": "Prescott", "NPY_DISABLE_CPU_FEATURES": "AVX2"}
    env = stage_environment(shell, zen2)
    assert env.values == dict.fromkeys(THREAD_VARIABLES, str(STAGE_THREADS)) | pinned_kernels(zen2)
    assert env.overridden == {} and env.threads == STAGE_THREADS == 1
    assert env.describe().endswith("the same numbers on every machine") and "the pinned kernel paths" in env.describe()
    mine = stage_environment({"CMCR_ATEN_CPU_CAPABILITY": "avx512", "CMCR_NUM_THREADS": "3"}, zen2)
    assert mine.values["ATEN_CPU_CAPABILITY"] == "avx512" and mine.values["OMP_NUM_THREADS"] == "3"
    assert mine.threads == 3 and mine.values["MKL_CBWR"] == "COMPATIBLE"
    assert mine.overridden == {"ATEN_CPU_CAPABILITY": "CMCR_ATEN_CPU_CAPABILITY", "OMP_NUM_THREADS": "CMCR_NUM_THREADS",
                               "OPENBLAS_NUM_THREADS": "CMCR_NUM_THREADS", "MKL_NUM_THREADS": "CMCR_NUM_THREADS"}
    line = mine.describe()
    assert "set by hand" in line and "CMCR_ATEN_CPU_CAPABILITY=avx512" in line and "CMCR_NUM_THREADS=3" in line
    assert "may differ from the committed ones" in line
    for bad in ("0", "two", "-1"):
        with pytest.raises(ConfigError, match="CMCR_NUM_THREADS must be an integer >= 1"):
            stage_environment({"CMCR_NUM_THREADS": bad}, zen2)


def test_pinning_a_process_before_numpy_and_torch_load_sets_the_environment():
    environ = {"ATEN_CPU_CAPABILITY": "default", "PATH": "/bin"}
    env = pin_process(environ, modules={})
    assert {k: environ[k] for k in env.values} == env.values and environ["PATH"] == "/bin"
    assert pin_process(environ, modules={"numpy": object()}).values == env.values  # already pinned: nothing to redo
    assert is_stage_script(ROOT / "stages" / "train.py") and not is_stage_script(ROOT / "tests" / "x.py")
    assert not is_stage_script("")


def test_common_is_every_stage_scripts_first_import_and_loads_neither_numpy_nor_torch():
    """The pins apply only if set before numpy/torch load: stages/common.py (which sets them) must come first."""
    for script in sorted((ROOT / "stages").glob("*.py")):
        if script.name == "common.py":
            continue
        body = ast.parse(script.read_text()).body
        imports = [n for n in body if isinstance(n, (ast.Import, ast.ImportFrom))
                   and not (isinstance(n, ast.ImportFrom) and n.module == "__future__")]
        first = imports[0]
        assert isinstance(first, ast.ImportFrom) and first.module == "common", f"{script.name}: common is not first"
    code = ("import sys; sys.path.insert(0, 'stages'); import common; "
            "print(sorted(m for m in ('numpy', 'torch', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_stage_that_loaded_numpy_and_torch_first_starts_again_with_the_pins(tmp_path):
    """The stage environment cannot depend on a stage's import order: a stage script that imports numpy and torch
    before common is restarted with the pins (here asked for the opposite by its shell)."""
    if pinned_kernels(read_processor()) == {}:
        pytest.skip("this processor has no AVX2 + FMA: nothing is pinned")
    (tmp_path / "stages").mkdir()
    script = tmp_path / "stages" / "early.py"
    script.write_text(f"""
import numpy
import torch
import sys
sys.path.insert(0, {str(ROOT / "stages")!r})
import common
import os
print(os.environ["ATEN_CPU_CAPABILITY"], torch.backends.cpu.get_cpu_capability(), os.environ.get("CMCR_PINNED_REEXEC"),
      common.STAGE_ENVIRONMENT.threads, os.environ["OMP_NUM_THREADS"], sys.argv[1:])
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CMCR_")} | {"ATEN_CPU_CAPABILITY": "default",
                                                                                "OMP_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, str(script), "a", "b"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["avx2", "AVX2", "1", "1", "1", "['a',", "'b']"]


def test_the_committed_provenance_is_what_the_stages_compute_with():
    """metrics/provenance.json (`cmcr provenance`, run by `make demo`) records what made the committed outputs:
    it must name the pins, thread count and library versions this checkout's stages use."""
    record = json.loads((ROOT / "metrics" / "provenance.json").read_text())
    avx2 = Processor("any", "any", "x86_64", frozenset({"avx2", "fma"}))
    assert record["pinned"] == pinned_kernels(avx2) and record["overridden"] == {}
    assert record["threads"] == STAGE_THREADS and record["torch_cpu_capability"] == "AVX2"
    assert record["processor"]["feature_class"] in ("avx2", "avx512") and "warning" not in record
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert record["versions"]["torch"].split("+")[0] == pins["torch"]
    assert record["versions"]["numpy"] == pins["numpy"]
    assert record["device"]["kind"] in ("cpu", "cuda")


def test_provenance_is_measured_in_a_pinned_process(tmp_path):
    """`cmcr provenance` measures a fresh process with the stage environment, whatever its own shell asks for."""
    if pinned_kernels(read_processor()) == {}:
        pytest.skip("this processor has no AVX2 + FMA: nothing is pinned")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CMCR_")} | {"ATEN_CPU_CAPABILITY": "default"}
    out = subprocess.run([sys.executable, "-m", "cmcr", "provenance", "--out", str(tmp_path / "p.json")], env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    record = json.loads((tmp_path / "p.json").read_text())
    assert record["torch_cpu_capability"] == "AVX2" and record["overridden"] == {}
    assert record["processor"] == read_processor().as_dict() and "kernels AVX2" in out.stdout
    mine = subprocess.run([sys.executable, "-m", "cmcr", "provenance"], env=env | {"CMCR_ATEN_CPU_CAPABILITY": "default"},
                          capture_output=True, text=True, check=True)
    record = json.loads(mine.stdout)
    assert record["torch_cpu_capability"] == "DEFAULT"
    assert record["overridden"] == {"ATEN_CPU_CAPABILITY": "CMCR_ATEN_CPU_CAPABILITY"}
