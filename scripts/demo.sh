#!/usr/bin/env bash
# Install everything, then run the main job: lottery tickets (IMP with weight rewinding) of LeNet-300-100
# on real Fashion-MNIST down to 5% density, with the random-reinitialisation control; table + plot.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/ticketlab prune --model lenet300 --dataset fashion-mnist --method lottery --density 0.05 \
    --steps 3ep --batch-size 60 --lr 0.1 --control reinit --out runs "$@"
