#!/usr/bin/env bash
# The GPU checks of the speed issue, as one command on a lent GPU machine (no network, its own
# PyTorch; nothing of `make install`). Prepare here first (see benchmarks/transformer_base.py):
#   seqlab average --weights-only runs/multi30k-transformer/best.pt -o .gpu/transformer.pt
#   cp "$SEQLAB_CORPUS_MIRROR/multi30k/test_2016_flickr.de.gz" .gpu/
# then, there, carrying .gpu:  bash benchmarks/gpu_check.sh "$OUT"
# Writes OUT/transformer_base.json (Transformer-base tokens/s and MFU, beam-5 test2016
# sentences/s), OUT/gpu_tests.log (tests/test_gpu.py) and OUT/nvidia-smi.txt.
set -uo pipefail
out="${1:?usage: benchmarks/gpu_check.sh OUT_DIR}"
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$out/gpu_tests.log"
tests=${PIPESTATUS[0]}
SEQLAB_BENCH_CHECKPOINT=.gpu/transformer.pt SEQLAB_BENCH_SOURCES=.gpu/test_2016_flickr.de.gz \
    python3 -m benchmarks transformer_base --out "$out" 2>&1 | tee "$out/bench.log"
bench=${PIPESTATUS[0]}
echo "gpu tests exit $tests, benchmark exit $bench"
exit $(( tests || bench ))
