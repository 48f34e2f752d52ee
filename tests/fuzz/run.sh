#!/usr/bin/env bash
# Builds the libFuzzer targets with clang and runs each for SECONDS (default 600), seeded with
# the test fixtures. Findings (crash-*, leak-*, timeout-*) land in build-fuzz/findings/TARGET.
# usage: tests/fuzz/run.sh [SECONDS] [TARGET ...]   (targets: safetensors config image pytorch)
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(safetensors config image pytorch)
command -v clang++ >/dev/null && dpkg -s libclang-rt-14-dev >/dev/null 2>&1 || (apt-get update && apt-get install -y --no-install-recommends clang libclang-rt-14-dev)
cmake -S . -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVITMAE_FUZZ=ON \
  -DVITMAE_BUILD_TESTS=OFF -DVITMAE_BUILD_EXAMPLES=OFF -DVITMAE_OPENMP=OFF >/dev/null
cmake --build build-fuzz -j2 >/dev/null
for t in "${targets[@]}"; do
  corpus=build-fuzz/corpus/$t findings=build-fuzz/findings/$t
  mkdir -p "$corpus" "$findings"
  case $t in
    safetensors) find tests/data -name '*.safetensors' -size -400k -exec cp {} "$corpus" \; ;;
    config) for f in $(find tests/data -name '*.json'); do (printf '\x00'; cat "$f") > "$corpus/c0-$(basename "$f")"; \
              (printf '\x01'; cat "$f") > "$corpus/c1-$(basename "$f")"; (printf '\x02'; cat "$f") > "$corpus/c2-$(basename "$f")"; done ;;
    image) cp tests/data/images/* "$corpus"; rm -f "$corpus/NOTICE" ;;
    pytorch) find tests/data -name '*.bin' -o -name '*.pth' | xargs -I{} cp {} "$corpus" ;;
  esac
  echo "== fuzz_$t for ${seconds}s"
  (cd "$findings" && ../../tests/fuzz/fuzz_$t ../../corpus/$t -max_total_time="$seconds" -rss_limit_mb=4096 -print_final_stats=1 2>&1 | tail -n 12) || echo "fuzz_$t: FINDING in $findings"
done
