#!/usr/bin/env bash
# Trains the samir model shipped in the package (SAMRegistrationLib/learned/samir/shipped/).
# Needs ../shared/data beside this checkout (see samir-shared.json) and `make setup`.
# Usage: Resources/Training/train-samir.sh [RUN_DIR]   (default: runs/samir-shared)
# 2-core CPU: about 12 min of encoding (cached afterwards) and 32 min of training.
# 900 steps: the same run continued to 1000 diverged at step 985 (training loss; docs/training.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec .venv/bin/samreg train samir --data Resources/Training/samir-shared.json -o "${1:-runs/samir-shared}" \
  --grid-size 64,64,64 --grid-spacing 3 --spacing 3 --deformed-copies 4 --deform-voxels 6 \
  --pair-weight 0.3 --steps 900 --lr 1e-3 --val-every 100 --checkpoint-every 100 --seed 0 --threads 2
