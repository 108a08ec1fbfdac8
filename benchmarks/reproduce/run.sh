#!/usr/bin/env bash
# Run every reproduction suite of the source documents (each resumable: run again to continue), then
# write one report per suite (HTML + PNG + report.md).
#
#   bash benchmarks/reproduce/run.sh                # full budget: the documents' recipes (days on a CPU)
#   bash benchmarks/reproduce/run.sh --reduced      # 1-2 epochs per training (docs/results)
#   DATASET=mnist bash benchmarks/reproduce/run.sh  # the same suites on MNIST (needs its files)
#   bash benchmarks/reproduce/run.sh --help         # this text
#
# Each suite file states its experiment; docs/results/README.md ("Hyperparameters") puts its settings
# beside the document's and says why any differ. The reduced budget changes only what the list below
# sets (lengths, and fewer pruning levels in the 002 MLP suites).
# RUNS (default runs/reproduce[-reduced]) holds the run directories, REPORTS (default RUNS/reports)
# the reports. The CIFAR-10 suite runs only where CIFAR-10 is found (ticketlab data list).
set -euo pipefail
cd "$(dirname "$0")/../.."
reduced=0
case "${1:-}" in
  "") ;;
  --reduced) reduced=1 ;;
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "unknown option ${1}: use --reduced or --help" >&2; exit 2 ;;
esac
dataset="${DATASET:-fashion-mnist}"
runs="${RUNS:-runs/reproduce$([[ $reduced == 1 ]] && echo -reduced)}"
reports="${REPORTS:-$runs/reports}"
have() { python -c "import sys; from ticketlab.data import dataset_status; sys.exit(0 if any(r['name'] == '$1' and r['found'] for r in dataset_status()) else 1)"; }

# suite, reduced budget, report baseline
suites=(
  "003_winning_tickets|--set recipe.steps=1ep --set recipe.eval_every=300it|lottery"
  "001_regrowth|--set recipe.steps=1ep|lottery"
  "004_supermask|--set recipe.steps=2ep|supermask"
  "004_supermask_signed_constant|--set recipe.steps=2ep|supermask"
  "004_layer_size|--set recipe.steps=2ep|lottery · mlp:784-150-25-10"
  "002_gimp_variants|--set recipe.steps=2ep --set method.K=0.5|lottery"
  "002_modifications|--set recipe.steps=2ep --set method.K=0.5|lottery"
  "000_criteria_schedules|--set recipe.steps=1ep|oneshot(magnitude)"
  "000_stacked_saw|--set recipe.steps=1ep|multishot(synflow) on bimodal"
  "002_cifar_bn|--set recipe.steps=2ep --set recipe.milestones=[1ep] --set recipe.eval_every=1ep|lottery"
)
for entry in "${suites[@]}"; do
  IFS='|' read -r name reduce baseline <<< "$entry"
  file="benchmarks/reproduce/$name.yaml"
  data="$dataset"
  [[ $name == 002_cifar_bn ]] && data=cifar10
  if ! have "$data"; then
    echo "== $name: skipped, $data not found (ticketlab data list)"
    continue
  fi
  args=(--out "$runs/$name")
  [[ $name != 002_cifar_bn ]] && args+=(--set "dataset=$data")
  # shellcheck disable=SC2206
  [[ $reduced == 1 ]] && args+=($reduce)
  echo "== $name"
  start=$(date +%s)
  ticketlab sweep "$file" "${args[@]}" || echo "== $name: some runs failed (listed above); run again to retry them"
  echo "== $name: $(( $(date +%s) - start )) s"
  ticketlab report "$runs/$name" --baseline "$baseline" --out "$reports/$name" || echo "== $name: report failed"
done
