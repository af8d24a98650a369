#!/usr/bin/env bash
# Set everything up on a fresh Debian machine with Python 3.11, then run the main job:
# load sketch_gan_plus_merchant, encode a generated merchant-mark corpus, write a retrieval grid PNG.
set -euo pipefail
cd "$(dirname "$0")"
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    apt-get install -y -qq dataset-fashion-mnist >/dev/null  # Fashion-MNIST idx files (BinGAN)
    apt-get install -y -qq chromium >/dev/null  # the browser the search page's tests drive
fi
python3 -m pip install -q -e ".[test,web,beam]"
# TF Serving's protos (warmup records); --no-deps: it names the full `tensorflow` wheel, which
# would clash with tensorflow-cpu.
python3 -m pip install -q --no-deps tensorflow-serving-api==2.21.0
python3 -m zoo demo --out demo
