#!/usr/bin/env bash
# A/B of the GraphQL earn benchmark: an older commit against this checkout, alternating rounds.
#   bench/ab_graphql_earn.sh BASE_COMMIT [ROUNDS] [SECONDS] [BENCH ARGS...]
# e.g. bench/ab_graphql_earn.sh main 4 12 --offers 20 --tiers
# The base runs from a temporary git worktree with this checkout's .venv (PYTHON: another
# interpreter); DATABASE_URL as for `python -m bench.graphql_earn` (unset: the embedded
# PostgreSQL). Each round prints the machine's load (`uptime`): the ratio is only comparable
# within a round.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
base_commit="$1"; rounds="${2:-3}"; seconds="${3:-12}"
extra=("${@:4}")
py="${PYTHON:-$root/.venv/bin/python}"
export PATH="$(dirname "$py"):$PATH"
base="$(mktemp -d)/base"
git -C "$root" worktree add -q --detach "$base" "$base_commit"
trap 'git -C "$root" worktree remove --force "$base"' EXIT
for i in $(seq "$rounds"); do
  for side in base main; do
    dir="$base"; [ "$side" = main ] && dir="$root"
    echo "== $side round $i $(date -u +%H:%M:%S) $(uptime | sed 's/.*load/load/')"
    (cd "$dir" && "$py" -m bench.graphql_earn --seconds "$seconds" "${extra[@]}" | tail -4)
  done
done
