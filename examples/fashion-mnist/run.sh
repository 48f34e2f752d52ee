#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The MAE paper's claim in miniature, on Fashion-MNIST (Debian's dataset-fashion-mnist):
# pre-train an MAE on the 60,000 training images (labels unused), then fine-tune it with 1%, 10%
# and 100% of the labels against the same ViT trained from random initialisation with the same
# recipe and the same steps; linear probes of the MAE encoder, of a random encoder and of the raw
# pixels. Every accuracy is on the 10,000 test images; the recipe was chosen on 500 training
# images per class held out (vitmae-finetune --holdout 500), never on the test set.
#
#   examples/fashion-mnist/run.sh [STAGE...]      (from the repository's root, after a build)
#
# STAGES: pretrain scratch mae probes table curves (default: all, in that order). Environment:
#   BIN      the folder of the built programs (default build/examples)
#   OUT      where runs go (default fashion-mnist-runs)
#   DATA     the IDX files (default /usr/share/datasets/fashion-mnist)
#   THREADS  threads per run (default: all cores)
#   LABELS   the label counts per class the scratch and mae stages run (default "60 600 all")
# The table is OUT/results.md. Measured times are in each run's log (OUT/*.log).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
BIN=${BIN:-build/examples}
OUT=${OUT:-fashion-mnist-runs}
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
THREADS=${THREADS:-$(nproc)}
LABELS=${LABELS:-60 600 all}
train="fashion-mnist:$DATA:train"
test="fashion-mnist:$DATA:t10k"
stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(pretrain scratch mae probes table curves)
for s in "${stages[@]}"; do
  case $s in pretrain | scratch | mae | probes | table | curves) ;; *) echo "run.sh: unknown stage '$s'" >&2; exit 2 ;; esac
done
mkdir -p "$OUT"

# Pre-training (at most an hour on 2 cores): encoder 96 wide x 4 layers, 3 heads, patch 4 (7x7
# patches of 28x28), decoder 64 x 2; mask ratio 0.75, norm_pix_loss; 14,000 steps of 256 (60 epochs).
pretrain() {
  "$BIN/vitmae-pretrain" --data "$train" --out "$OUT/mae" --config "$here/mae-28.json" --batch 256 --steps 14000 \
    --lr 1.5e-3 --scale-min 0.5 --save-every 2000 --log-every 200 --seed 0 --threads "$THREADS" 2>&1 | tee "$OUT/pretrain.log"
}

# Fine-tuning, one recipe for every row: batch 64, base lr 4e-3 (peak 1e-3), layer decay 0.75,
# label smoothing 0.1, crops of at least 60% of the image, flips; steps by label count.
steps_for() { case $1 in 60) echo 1000 ;; 600) echo 3000 ;; all) echo 14000 ;; esac; }
finetune() {  # NAME LABELS FLAG... (the model's flags and any extra)
  local name=$1 labels=$2
  shift 2
  local steps=$(steps_for "$labels")
  local subset=()  # all labels: no subset
  [ "$labels" = all ] || subset=(--labels-per-class "$labels")
  "$BIN/vitmae-finetune" --data "$train" --val "$test" --out "$OUT/$name" "${subset[@]}" --steps "$steps" \
    --eval-every $((steps / 10)) --batch 64 --base-lr 4e-3 --scale-min 0.6 --seed 0 --threads "$THREADS" "$@" \
    2>&1 | tee "$OUT/$name.log"
}
scratch() {
  for n in $LABELS; do
    finetune "scratch-$n" "$n" --config "$here/vit-28.json"
    finetune "scratch-nold-$n" "$n" --config "$here/vit-28.json" --layer-decay 1
  done
}
mae() {
  for n in $LABELS; do finetune "mae-$n" "$n" --init "$OUT/mae/final"; done
}
probes() {
  "$BIN/vitmae-finetune" --data "$train" --val "$test" --out "$OUT/probe-mae" --init "$OUT/mae/final" --linear-probe \
    --threads "$THREADS" 2>&1 | tee "$OUT/probe-mae.log"
  "$BIN/vitmae-finetune" --data "$train" --val "$test" --out "$OUT/probe-mae-mean" --init "$OUT/mae/final" --linear-probe \
    --probe-features mean --threads "$THREADS" 2>&1 | tee "$OUT/probe-mae-mean.log"
  "$BIN/vitmae-finetune" --data "$train" --val "$test" --out "$OUT/probe-random" --config "$here/vit-28.json" --linear-probe \
    --threads "$THREADS" 2>&1 | tee "$OUT/probe-random.log"
  "$BIN/vitmae-finetune" --data "$train" --val "$test" --out "$OUT/probe-pixels" --config "$here/vit-28.json" --linear-probe \
    --probe-features pixels --threads "$THREADS" 2>&1 | tee "$OUT/probe-pixels.log"
}
acc() {  # the final validation's top-1 (%), or "not run" (no final/ or no figure yet)
  local m="$OUT/$1/metrics.csv"
  if [ -f "$m" ] && { [ -d "$OUT/$1/final" ] || [ "$1" = probe-pixels ] || [ "$1" = probe-mae-mean ]; } && [ -f "$OUT/$1/per_class.csv" ]; then
    tail -n 1 "$m" | awk -F, '$7 != "" { printf "%.2f", 100 * $7; ok = 1 } END { if (!ok) printf "not run" }'
  else
    echo "not run"
  fi
}
table() {
  {
    echo "| labels | MAE pre-trained, fine-tuned | from scratch (same recipe) | from scratch, no layer decay | steps |"
    echo "|---|---|---|---|---|"
    for n in 60 600 all; do
      label=$([ $n = all ] && echo "100% (6,000 per class)" || echo "$((n / 60))% ($n per class)")
      echo "| $label | $(acc mae-$n) | $(acc scratch-$n) | $(acc scratch-nold-$n) | $(steps_for $n) x 64 |"
    done
    echo
    echo "| linear probe (all labels) | test top-1 |"
    echo "|---|---|"
    echo "| MAE encoder, CLS token | $(acc probe-mae) |"
    echo "| MAE encoder, mean patch token | $(acc probe-mae-mean) |"
    echo "| random encoder, CLS token | $(acc probe-random) |"
    echo "| raw pixels (logistic regression) | $(acc probe-pixels) |"
  } | tee "$OUT/results.md"
}
# Validation top-1 against step of the three runs of each label count, OUT/curves-N.svg.
curves() {
  for n in 60 600 all; do
    files=()
    for r in mae scratch scratch-nold; do [ -f "$OUT/$r-$n/metrics.csv" ] && files+=("$OUT/$r-$n/metrics.csv"); done
    [ ${#files[@]} -gt 0 ] || continue
    awk -F, -v title="test top-1 (%) against step, $n labels per class" '
      FNR == 1 { k++; np = split(FILENAME, parts, "/"); name[k] = parts[np - 1]; next }
      $7 != "" { n[k]++; x[k, n[k]] = $1; y[k, n[k]] = 100 * $7; if ($1 > xmax) xmax = $1
                 if (lo == "" || 100 * $7 < lo) lo = 100 * $7 }
      END {
        if (xmax == 0) exit 1
        W = 720; H = 400; ml = 60; mr = 20; mt = 30; mb = 45; lo = int(lo / 5) * 5; hi = 100
        split("#d62728 #1f77b4 #7f7f7f", colour, " ")
        printf "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" font-size=\"12\">\n", W, H
        printf "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
        printf "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n", ml, H - mb, W - mr, H - mb
        printf "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n", ml, mt, ml, H - mb
        for (i = 1; i <= k; i++) {
          printf "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", colour[i]
          for (j = 1; j <= n[i]; j++)
            printf "%.1f,%.1f ", ml + x[i, j] / xmax * (W - ml - mr), mt + (hi - y[i, j]) / (hi - lo) * (H - mt - mb)
          printf "\"/>\n<text x=\"%d\" y=\"%d\" fill=\"%s\">%s: %.2f</text>\n", ml + 12, mt + 16 * i, colour[i], name[i], y[i, n[i]]
        }
        printf "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%d</text>\n", ml - 6, mt + 4, hi
        printf "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%d</text>\n", ml - 6, H - mb, lo
        printf "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%d</text>\n", W - mr, H - mb + 16, xmax
        printf "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">step (batch 64)</text>\n", (W + ml) / 2, H - 12
        printf "<text x=\"%d\" y=\"18\" text-anchor=\"middle\">%s</text>\n</svg>\n", (W + ml) / 2, title
      }' "${files[@]}" > "$OUT/curves-$n.svg.tmp" && mv "$OUT/curves-$n.svg.tmp" "$OUT/curves-$n.svg"
  done
}
for s in "${stages[@]}"; do "$s"; done
