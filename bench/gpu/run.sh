#!/usr/bin/env bash
# One prepared run for the GPU machine (one NVIDIA H200; JAX, PyTorch and CUDA there, no
# TensorFlow, no internet). Carry the Keras wheels for Python 3.12, made here once:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl keras==3.15.1 keras-rs==0.4.0 namex optree
# then run through the device tool with carry [".whl"] and the command `bash bench/gpu/run.sh`.
# Writes $OUT/train_throughput_h200.json (commit it as results/train_throughput_h200.json).
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 KERAS_BACKEND=jax
nvidia-smi --query-gpu=name,memory.total --format=csv
out="${OUT:-/tmp}"
# Coverage 10^4 .. 10^6 raw behaviors: TwinV2 over 10^3 .. 10^5 clusters; Twin over the raw
# behaviors up to 10^5 (10^6 raw x batch 1024 does not fit).
python3 bench/train_throughput.py --coverage 10000 100000 1000000 --batch 1024 --steps 20 \
    --twin-max-length 100000 | tee "$out/train_throughput_h200.log"
tail -n 1 "$out/train_throughput_h200.log" > "$out/train_throughput_h200.json"
