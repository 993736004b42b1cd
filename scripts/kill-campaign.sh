#!/usr/bin/env bash
# The kill campaign: N SIGKILLs (default 300) during `capi apply`, `capi
# upgrade` and `capi destroy` on the simulator, each followed by the checks
# of tests/it/kill_campaign.rs (the state loads and validates, a re-run
# converges, no duplicate, leaked or orphaned machine). Prints the figures
# recorded in docs/reliability.md.
#
#   scripts/kill-campaign.sh [N] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
export CAPI_KILL_RUNS="${1:-300}"
export CAPI_KILL_SEED="${2:-1}"
cargo test --locked --test it kill_campaign::kill_campaign_from_the_script \
  -- --ignored --nocapture --exact 2>&1 | grep -E 'kill campaign|panicked|run [0-9]+|test result'
