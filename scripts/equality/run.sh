#!/usr/bin/env bash
# Short seeded runs whose numbers must not change when the code is reorganised.
#
#   bash scripts/equality/run.sh PYTHON OUTDIR
#
# PYTHON is an interpreter with one build of metarl installed; run it once per build, then
# `python scripts/equality/compare.py OUTDIR_BEFORE OUTDIR_AFTER`. Keys whose defaults changed on
# purpose since the reorganisation are pinned (fd_epsilon: 1e-3 then, 0.01 now; see docs/numerics.md).
set -eu
PY=$1; OUT=$(realpath -m "$2"); rm -rf "$OUT"; mkdir -p "$OUT"; cd /tmp
common="tensorboard=false"
$PY -m metarl train sinusoid --out "$OUT/sinusoid" --no-progress --set iterations=300 log_every=50 checkpoint_every=300 $common
$PY -m metarl train sinusoid --out "$OUT/sinusoid-fo" --no-progress --set iterations=200 log_every=50 checkpoint_every=200 meta_gradient=first_order $common
$PY -m metarl train sinusoid --out "$OUT/sinusoid-fd" --no-progress --set iterations=200 log_every=50 checkpoint_every=200 meta_gradient=finite_difference fd_epsilon=0.001 $common
$PY -m metarl train omniglot-5w1s --out "$OUT/omniglot" --no-progress --set iterations=10 meta_batch_size=4 log_every=5 checkpoint_every=10 $common
$PY -m metarl train navigation --out "$OUT/navigation" --no-progress --set iterations=3 meta_batch_size=5 episodes_per_task=5 checkpoint_every=3 $common
$PY -m metarl train halfcheetah-vel --out "$OUT/halfcheetah" --no-progress --set iterations=2 meta_batch_size=4 episodes_per_task=4 checkpoint_every=2 $common
