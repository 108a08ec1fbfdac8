#!/usr/bin/env bash
# Issue 23: the disputed claims at the documents' budgets. Runs the focused suites of
# benchmarks/reproduce/budget/ (each file states its claim, recipe, budget and why), one after the other,
# then writes each suite's page: report (HTML + PNG + report.md), tidy results.csv and compute.md
# (model-epochs, wall time of every session).
#
#   bash benchmarks/reproduce/budget.sh                          # every suite, in the order below
#   bash benchmarks/reproduce/budget.sh 000_saw_vs_bimodal ...   # these suites
#   bash benchmarks/reproduce/budget.sh --list                   # the suites
#   bash benchmarks/reproduce/budget.sh --help                   # this text
#
# Resumable: run it again (in a later session too) and each suite continues where it stopped (finished
# runs are skipped, an unfinished run resumes from its last finished level); a finished suite trains
# nothing and only rewrites its page. Every session is logged in RUNS/<suite>.sessions.tsv; a session that
# was killed (e.g. at the end of a work session) is logged when the next one starts, with its length up to
# the last file it wrote (a lower bound).
# It commits nothing: when a suite is complete it prints the `git add` / `git commit` line for its page.
# Then: python benchmarks/reproduce/claims.py RUNS --suites budget (the verdicts).
# RUNS (default runs/reproduce-budget) holds the run directories, PAGES (default
# docs/results/reproduce-budget) the pages; LAYOUT (default 2x1x1: 2 local workers x 1 torch thread, as
# the suites' estimates assume) goes to ticketlab sweep --layout; NICE (default 10) is the niceness;
# TICKETLAB_SPARSE_TRAINING (default off here) fixes the training path: `auto` times the sparse path per
# machine, and a level that takes it is labelled apart (env.sparse_path=on), so a suite resumed on another
# CPU could split its seeds; off keeps every level on the dense masked path of the reduced runs.
# TICKETLAB_COMPACT_ADAM (default off here) likewise keeps Adam's dense step on every machine.
# SET="key=value ..." adds --set overrides to every sweep (only for trying the script on tiny settings:
# its pages then say so).
set -euo pipefail
cd "$(dirname "$0")/../.."
here=benchmarks/reproduce

# suite | report baseline
suites=(
  "000_saw_vs_bimodal|multishot(synflow) on bimodal"
  "002_tom_vs_imp|lottery"
  "002_sgimp_vs_lr_rewind|lr_rewind"
  "001_regrowth_vs_imp|lottery"
  "000_fig514_order|lottery"
)
names=()
for entry in "${suites[@]}"; do names+=("${entry%%|*}"); done

case "${1:-}" in
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
  --list) printf '%s\n' "${names[@]}"; exit 0 ;;
  -*) echo "unknown option $1: use --list, --help or suite names" >&2; exit 2 ;;
esac
wanted=("$@")
[[ ${#wanted[@]} == 0 ]] && wanted=("${names[@]}")
for name in "${wanted[@]}"; do
  if [[ ! " ${names[*]} " == *" $name "* ]]; then
    echo "unknown suite '$name': one of ${names[*]}" >&2
    exit 2
  fi
done

runs="${RUNS:-runs/reproduce-budget}"
pages="${PAGES:-docs/results/reproduce-budget}"
layout="${LAYOUT:-2x1x1}"
sets=()
# shellcheck disable=SC2206
for kv in ${SET:-}; do sets+=(--set "$kv"); done
export TICKETLAB_SPARSE_TRAINING="${TICKETLAB_SPARSE_TRAINING:-off}"
# likewise Adam over the kept weights only (hardware.adam_choice: timed per machine, equal to float tolerance):
# off keeps every Adam level on the dense step the suites' first runs took
export TICKETLAB_COMPACT_ADAM="${TICKETLAB_COMPACT_ADAM:-off}"
tl() { nice -n "${NICE:-10}" ticketlab "$@"; }
cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)

for name in "${wanted[@]}"; do
  for entry in "${suites[@]}"; do [[ ${entry%%|*} == "$name" ]] && baseline="${entry#*|}"; done
  file="$here/budget/$name.yaml"
  out="$runs/$name"
  page="$pages/$name"
  mkdir -p "$runs"
  echo "== $name ($file -> $out)"
  start=$(date +%s)
  stamp=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  load=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")
  status=0
  open="$out.session.open"
  if [[ -f $open ]]; then  # a session killed before it could log itself: its length up to its last file
    IFS=$'\t' read -r ostamp ostart oload ocpu < "$open"
    last=$(find "$out" -type f -newer "$open" -printf '%T@\n' 2>/dev/null | sort -n | tail -1 | cut -d. -f1)
    if ! grep -q "^$ostamp"$'\t' "$out.sessions.tsv" 2>/dev/null; then  # not if that session logged itself
      printf '%s\t%s\t%s\t%s\t%s\n' "$ostamp" "$(( ${last:-$ostart} - ostart ))" "killed (seconds to its last file)" \
        "$oload" "$ocpu" >> "$out.sessions.tsv"
    fi
  fi
  printf '%s\t%s\t%s\t%s\n' "$stamp" "$start" "$load" "${cpu:-?}" > "$open"
  tl sweep "$file" --out "$out" --layout "$layout" ${sets[@]+"${sets[@]}"} || status=$?
  printf '%s\t%s\t%s\t%s\t%s\n' "$stamp" "$(( $(date +%s) - start ))" "$status" "$load" "${cpu:-?}" >> "$out.sessions.tsv"
  rm -f "$open"
  [[ $status != 0 ]] && echo "== $name: some runs failed (listed above); run again to retry them"
  mkdir -p "$page"
  kvs=()
  for kv in ${SET:-}; do kvs+=(--set "$kv"); done
  state=$(nice -n "${NICE:-10}" python "$here/budget_page.py" "$file" "$out" "$out.sessions.tsv" "$page/compute.md" ${kvs[@]+"${kvs[@]}"})
  if [[ -d $out ]] && ls "$out" | grep -qv '^dense$'; then
    tl results "$out" --csv "$page/results.csv" > /dev/null
    tl report "$out" --baseline "$baseline" --out "$page" > /dev/null \
      || tl report "$out" --out "$page" > /dev/null || echo "== $name: report failed"
  fi
  echo "== $name: $state; page: $page (compute.md: model-epochs, wall time)"
  if [[ $state == complete && -z ${SET:-} ]]; then
    echo "   to commit it: git add $page && git commit -m 'docs/results: $name at the documents' budget (issue 23)'"
  fi
done
