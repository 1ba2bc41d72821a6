#!/usr/bin/env bash
# Load test of a running facade with Locust, headless, at 1, 2, 4, 8, 16 and 32 concurrent users
# (10 s warm-up then 30 s measured per step): Locust's CSV and HTML report per step, a summary
# (users, req/s, p50, p95, p99, failures) and a plot of throughput and p99 against users, under
# runs/bench/load-<time>/ (or --out DIR).
# Usage: bash bench/load.sh URL [--data PREPARED] [--users 1 8] [--duration S] [--warmup S]
#        [--out DIR] [USER_CLASS ...]
# The listings come from --data, else $FBMR_BENCH_DATA, else runs/real/prepared; the API key from
# $FBMR_API_KEY when set. See bench/load.py and bench/locustfile.py.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { sed -n '2,9p' "$0"; exit 2; }
exec nice -n "${NICE:-0}" bash scripts/uv.sh run --frozen python bench/load.py "$@"
