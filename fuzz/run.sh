#!/usr/bin/env bash
# Runs every fuzz target for a while: bash fuzz/run.sh [seconds-per-target] (default 30).
#
# Installs cargo-fuzz when missing. cargo-fuzz needs a nightly compiler; RUSTC_BOOTSTRAP=1 lets
# the stable one take the nightly flags (-Zsanitizer=address). Each target starts from its seeds
# (fuzz/seeds/<target>, kept in git) and its corpus (fuzz/corpus/<target>, generated, ignored),
# and writes new inputs to the corpus; inputs under fuzz/regressions/<target> are replayed first.
# On a crash libFuzzer keeps the input under fuzz/artifacts/<target>/ and this script exits
# non-zero (after running the other targets).
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-30}"
export RUSTC_BOOTSTRAP=1
# One build job: this machine is shared.
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}"

command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz

targets=(policy_parse request_classifier keepalive_header)
declare -A dict=([policy_parse]=dicts/yaml.dict [request_classifier]=dicts/http.dict [keepalive_header]=dicts/http.dict)

# FUZZ_SANITIZER=none (CI) skips AddressSanitizer: the project has no unsafe code, panics are
# caught either way, and the instrumented build takes half as long.
sanitizer="${FUZZ_SANITIZER:-address}"
cargo fuzz build --sanitizer "$sanitizer"
failed=()
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" "artifacts/$target"
  # Inputs that once crashed (fuzz/regressions/<target>, kept in git) run once first.
  if compgen -G "regressions/$target/*" >/dev/null; then
    echo "== $target: regressions"
    if ! cargo fuzz run --sanitizer "$sanitizer" "$target" "regressions/$target" -- -runs=0; then
      failed+=("$target")
      continue
    fi
  fi
  echo "== $target: ${seconds}s"
  if ! cargo fuzz run --sanitizer "$sanitizer" "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -dict="${dict[$target]}" -print_final_stats=1; then
    failed+=("$target")
  fi
done

if ((${#failed[@]})); then
  echo "crashed: ${failed[*]}; inputs under fuzz/artifacts/" >&2
  ls -l artifacts/*/ >&2 || true
  exit 1
fi
echo "no crash in ${targets[*]} (${seconds}s each)"
