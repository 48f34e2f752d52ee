#!/usr/bin/env bash
# Every photograph examples/model/photos.sh gathers (its list: split|package|path|name|subject) is in
# examples/model/NOTICE, with the same split, name, subject and path, under the heading of its
# package at the version photos.sh pins, with an author and licence line; and NOTICE lists nothing
# photos.sh does not gather. Prints how many were checked; fails naming each difference.
# usage: tests/tools/check_notice.sh [MODEL_DIR]   (default: examples/model beside this script)
set -euo pipefail
dir=${1:-$(dirname "$0")/../../examples/model}
awk '
  FNR == 1 { file++ }
  file == 1 && /^  \[[^]]+\]=/ { p = $0; sub(/^  \[/, "", p); v = p; sub(/\].*/, "", p); sub(/^[^=]*=/, "", v)
                                  version[p] = v; next }
  file == 1 && /^(train|heldout)\|/ { split($0, f, "|"); key = f[1] "|" f[2] "|" f[4] "|" f[5] "|" f[3]
                                      gathered[key] = 1; n++; next }
  file == 2 && /^== Looked at and left out/ { done = 1 }
  file == 2 && done { next }
  file == 2 && /^== / { pkg = $2; ver = $3; sub(/:$/, "", ver)
                        if (!(pkg in version)) { print "NOTICE: a heading for " pkg ", which photos.sh does not use"; bad++ }
                        else if (ver != version[pkg]) { print "NOTICE: " pkg " " ver ", photos.sh pins " version[pkg]; bad++ }
                        next }
  file == 2 && /^(train|heldout) +[^ ]+ \([a-z]+\)/ { split_ = $1; name = $2; subj = $3; gsub(/[()]/, "", subj)
                                                       entry = 1; author = ""; next }
  file == 2 && entry == 1 { author = $0; entry = 2; next }
  file == 2 && entry == 2 { path = $0; gsub(/^ +| +$/, "", path); entry = 0
                            key = split_ "|" pkg "|" name "|" subj "|" path
                            if (author !~ /[a-zA-Z]/ || path !~ /^\//) { print "NOTICE: " name ": expected an author line, then its path"; bad++ }
                            listed[key] = 1; m++
                            if (!(key in gathered)) { print "NOTICE lists " key ", which photos.sh does not gather"; bad++ } }
  END { for (k in gathered) if (!(k in listed)) { print "NOTICE does not list " k " (split|package|name|subject|path)"; bad++ }
        if (n < 400) { print "photos.sh: " n " photographs in its list, expected 416"; bad++ }
        if (bad) exit 1
        print "check_notice: the " n " photographs photos.sh gathers are in NOTICE (" m " entries), and nothing else" }
' "$dir/photos.sh" "$dir/NOTICE"
