"""Do the stages compute the same bytes on other processors? Checked by emulating them with qemu-user.

    apt-get install qemu-user                                    # Debian's package (not a project dependency)
    python benchmarks/cross_cpu_check.py kernels                 # kernel probe, pinned and native, on 5 processors
    python benchmarks/cross_cpu_check.py stage --cpus Skylake-Client-v4   # a whole stage (spaces, CLIP's stand-in) emulated

`qemu-x86_64 -cpu <model>` runs this machine's Python with the CPUID of another processor (vendor, family, instruction
sets), so MKL, ATen, oneDNN, OpenBLAS and numpy dispatch as they would there; the arithmetic is emulated exactly
(TCG implements AVX2/FMA in IEEE software; it has no AVX-512, so the AVX-512 processor is this host). ``host`` is the
real processor. ``kernels`` prints, per processor, hashes of single kernels (SGEMM, MKL VML exp/log, ATen softmax and
log-softmax, numpy's BLAS and exp) and of a short contrastive training, in the stage environment
(:func:`cmcr.reproducibility.stage_environment`) and natively (the libraries' own choice), and marks every hash that
differs from the host's. ``stage`` runs ``stages/spaces.py clip`` under each processor in the stage environment and
compares the md5 of ``models/spaces/clip.pt`` (the working tree's copy is restored by a final host run).

Caveat, measured: qemu is bit-exact for these kernels (the emulated Zen 1 / Zen 2 give this real Zen 5 host's hashes)
but not for everything a whole training executes — under the emulated Zen 2 the stand-in CLIP's loss drifted from
the real host's at epoch 4 (3.961 against 3.960). So ``stage`` agreeing is evidence; ``stage`` differing is not
(benchmarks/RESULTS.md).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import typer

from cmcr.reproducibility import stage_environment

app = typer.Typer(add_completion=False)
ROOT = Path(__file__).resolve().parents[1]
#: emulated processors: AMD Zen 1 and Zen 2 (the issue's machine), Intel Haswell, Skylake and Cascade Lake's AVX2 core
CPUS = "host,EPYC-v1,EPYC-Rome,Haswell-v4,Skylake-Client-v4"

PROBE = r"""
import hashlib, numpy as np, torch
torch.manual_seed(0); torch.set_num_threads(1)
h = lambda t: hashlib.sha1(np.ascontiguousarray(t.detach().numpy() if hasattr(t, "detach") else t).tobytes()).hexdigest()[:8]
a, b = torch.randn(257, 129), torch.randn(129, 67)
out = {"sgemm": a @ b, "exp": torch.exp(a), "log": torch.log(a.abs() + 1), "softmax": torch.softmax(3 * a, 1),
       "log_softmax": torch.log_softmax(a, 1)}
net = torch.nn.Sequential(torch.nn.Linear(129, 64), torch.nn.BatchNorm1d(64), torch.nn.ReLU(), torch.nn.Linear(64, 32))
opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
x, y = torch.randn(256, 129), torch.nn.functional.normalize(torch.randn(256, 32), dim=1)
for _ in range(20):
    opt.zero_grad()
    logits = torch.nn.functional.normalize(net(x), dim=1) @ y.T / 0.05
    torch.nn.functional.cross_entropy(logits, torch.arange(256)).backward()
    opt.step()
out["training"] = torch.cat([p.detach().flatten() for p in net.parameters()])
r = np.random.default_rng(0).standard_normal((257, 129)).astype(np.float32)
out |= {"np_gemm": r @ r.T, "np_exp": np.exp(r)}
print(torch.backends.cpu.get_cpu_capability(), " ".join(f"{k}={h(v)}" for k, v in out.items()))
"""


def _command(cpu: str, args: list[str]) -> list[str]:
    python = str(Path(sys.prefix) / "bin" / "python")  # the venv's (qemu keeps its path, so the venv is found)
    return args if cpu == "host" else ["qemu-x86_64", "-cpu", cpu, python, *args[1:]]


def _environments(native: bool) -> dict[str, str]:
    """The stage environment (threads and kernel pins); ``native``: the threads only (the libraries' own paths)."""
    env = stage_environment({k: v for k, v in os.environ.items() if not k.startswith("CMCR_")})
    base = {k: v for k, v in os.environ.items() if not k.startswith("CMCR_") and k not in env.kernels}
    return base | {k: v for k, v in env.values.items() if not native or k not in env.kernels}


def _need_qemu() -> None:
    if shutil.which("qemu-x86_64") is None:
        raise typer.BadParameter("qemu-x86_64 not found: apt-get install qemu-user")


@app.command()
def kernels(cpus: str = CPUS) -> None:
    """Kernel hashes per emulated processor, in the stage environment and natively."""
    _need_qemu()
    for mode in ("pinned", "native"):
        print(f"\n{mode}:")
        reference: dict[str, str] = {}
        for cpu in cpus.split(","):
            out = subprocess.run(_command(cpu, [sys.executable, "-c", PROBE]), env=_environments(mode == "native"),
                                 capture_output=True, text=True)
            if out.returncode != 0:
                print(f"  {cpu:>18}: failed: {out.stderr.strip().splitlines()[-1:]}")
                continue
            capability, *pairs = out.stdout.split()
            hashes = dict(p.split("=") for p in pairs)
            reference = reference or hashes
            marked = " ".join(f"{k}={v}{'*' if v != reference[k] else ''}" for k, v in hashes.items())
            print(f"  {cpu:>18} ({capability}): {marked}")
    print("\n* differs from the first processor's (host)")


@app.command()
def stage(cpus: str = "EPYC-Rome,Haswell-v4,Skylake-Client-v4", timeout: int = 3600) -> None:
    """`stages/spaces.py clip` on each emulated processor and on the host (last, restoring the working tree's
    copy): the checkpoint's md5 must be the same everywhere."""
    _need_qemu()
    target = ROOT / "models" / "spaces" / "clip.pt"
    digests = {}
    for cpu in [*cpus.split(","), "host"]:
        start = time.perf_counter()
        out = subprocess.run(_command(cpu, [sys.executable, "stages/spaces.py", "clip"]), cwd=ROOT,
                             env=_environments(False), capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            print(f"  {cpu:>18}: failed: {out.stderr.strip()[-300:]}")
            continue
        digests[cpu] = hashlib.md5(target.read_bytes()).hexdigest()
        print(f"  {cpu:>18}: models/spaces/clip.pt md5 {digests[cpu]} ({time.perf_counter() - start:.0f} s)", flush=True)
    same = len(set(digests.values())) == 1
    print("the same bytes on every processor" if same else "different bytes: see above (under emulation not conclusive: module docstring)")
    raise typer.Exit(0 if same else 1)


if __name__ == "__main__":
    app()
