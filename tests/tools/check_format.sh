#!/usr/bin/env bash
# The tree's formatting: every C++ file as .clang-format says (Debian 12's clang-format 14:
# another version formats differently), and README.md a guide of at most 400 lines of at most
# 120 columns. Usage: tests/tools/check_format.sh [CLANG_FORMAT]   (exit 1 naming what is off)
set -euo pipefail
cd "$(dirname "$0")/../.."
clang_format=${1:-$(command -v clang-format-14 || command -v clang-format || true)}
if [[ -z "$clang_format" ]]; then
  echo "check_format: clang-format not found (apt-get install clang-format)" >&2
  exit 2
fi
version=$("$clang_format" --version)
if [[ "$version" != *"version 14."* ]]; then
  echo "check_format: $clang_format is '$version', expected Debian 12's clang-format 14" >&2
  exit 2
fi
mapfile -t files < <(find include examples tests -path tests/data -prune -o \( -name '*.hpp' -o -name '*.cpp' \) -print |
  LC_ALL=C sort)
status=0
"$clang_format" --dry-run --Werror "${files[@]}" || status=1
lines=$(wc -l < README.md)
if ((lines > 400)); then
  echo "check_format: README.md has $lines lines, at most 400 expected" >&2
  status=1
fi
if awk 'length > 120 { printf "check_format: README.md:%d is %d columns, at most 120 expected\n", FNR, length; bad = 1 }
        END { exit bad }' README.md >&2; then :; else status=1; fi
if ((status == 0)); then echo "check_format: ${#files[@]} C++ files as .clang-format says; README.md $lines lines"; fi
exit $status
