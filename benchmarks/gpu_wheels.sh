#!/usr/bin/env bash
# Run HERE (with internet to the package registry), before a GPU session: fetch the wheels the lent GPU
# machine lacks (its image has torch, torchvision, timm, transformers, pandas, pyarrow, typer, pytest…, but no
# open_clip, laion_clap, librosa, soundfile; and no registry to install them from) into .gpu/wheels/ (and the official fixtures into .gpu/fixtures/), which
# `benchmarks/gpu_check.sh` installs from with --no-index. Python 3.12 wheels (the GPU image's python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="${PIP:-.venv/bin/pip}"
mkdir -p .gpu/wheels
"$PIP" download --dest .gpu/wheels --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --platform any \
    open_clip_torch==3.3.0 laion_clap==1.1.7 torchlibrosa==0.1.0 librosa==0.11.0 soundfile soxr audioread \
    ftfy wcwidth braceexpand webdataset pooch decorator cffi pycparser platformdirs
# pure-Python packages published only as source: build their wheels here
"$PIP" wheel --wheel-dir .gpu/wheels --no-deps progressbar wget
# the official release's files, for the device tests (CMCR_OFFICIAL_FIXTURES, set by gpu_check.sh)
[ -d ../shared/fixtures/c-mcr-official ] && rm -rf .gpu/fixtures && cp -r ../shared/fixtures/c-mcr-official .gpu/fixtures
du -sh .gpu/wheels .gpu/fixtures
