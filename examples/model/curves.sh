#!/usr/bin/env bash
# Draws the bundled model's training curves: the training loss of each step (OUT/loss.csv of
# vitmae-pretrain, as a moving average over 200 steps) and the held-out loss of each checkpoint
# (heldout.sh's mean masked-patch loss over the held-out photographs, 10 masks each), against step.
#
# usage: examples/model/curves.sh RUN_DIR HELDOUT_DIR OUT_DIR   (BUILD=DIR: default build)
# Writes OUT_DIR/heldout.csv (step,loss,ratio: each checkpoint's mean held-out loss and mean ratio
# to the mean-fill baseline; a checkpoint already in it is not scored again) and OUT_DIR/loss.svg.
# About 25 s a checkpoint (28 photographs, the bundled model).
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: $0 RUN_DIR HELDOUT_DIR OUT_DIR" >&2; exit 2; }
run=$1 heldout=$2 out=$3
here=$(dirname "$0")
# Checkpoints already scored in OUT_DIR/heldout.csv (a run scored while it trains) are kept.
if [ -f "$out/heldout.csv" ]; then cp "$out/heldout.csv" "$out/heldout.csv.tmp"; else echo "step,loss,ratio" > "$out/heldout.csv.tmp"; fi
for dir in $(ls -dv "$run"/checkpoint-*) "$run/final"; do  # -v: checkpoint-2000 before checkpoint-10000
  [ -f "$dir/model.safetensors" ] || continue  # no final model yet
  step=$(basename "$dir"); step=${step#checkpoint-}
  [ "$step" = final ] && step=$(tail -n 1 "$run/loss.csv" | cut -d, -f1)
  grep -q "^$step," "$out/heldout.csv.tmp" && continue  # the last checkpoint is the final model
  "$here/heldout.sh" "$dir" "$heldout"/* | awk -v s="$step" '$1 == "mean" { print s "," $3 "," $4 }' \
    >> "$out/heldout.csv.tmp"
done
(head -n 1 "$out/heldout.csv.tmp"; tail -n +2 "$out/heldout.csv.tmp" | sort -t, -k1 -n) > "$out/heldout.csv"
rm "$out/heldout.csv.tmp"

awk -F, -v W=720 -v H=400 '
  FNR == 1 { file++; next }
  file == 1 { n++; st[n] = $1; acc += $2; if (n > 200) acc -= raw[n - 200]; raw[n] = $2
              avg[n] = acc / (n < 200 ? n : 200) }
  file == 2 { m++; hs[m] = $1; hl[m] = $2 }
  END {
    ml = 70; mr = 20; mt = 30; mb = 50; lo = 1e9; hi = -1e9
    for (i = 50; i <= n; i++) { lo = avg[i] < lo ? avg[i] : lo; hi = avg[i] > hi ? avg[i] : hi }
    for (i = 1; i <= m; i++) { lo = hl[i] < lo ? hl[i] : lo; hi = hl[i] > hi ? hl[i] : hi }
    lo = int(lo * 10) / 10; hi = int(hi * 10 + 0.999) / 10
    printf "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" ", W, H, W, H
    printf "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
    printf "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n", ml, H - mb, W - mr, H - mb
    printf "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n", ml, mt, ml, H - mb
    printf "<polyline fill=\"none\" stroke=\"#08519c\" stroke-width=\"2\" points=\""
    for (i = 50; i <= n; i += (n > 1000 ? int(n / 500) : 1))
      printf "%.1f,%.1f ", ml + st[i] / st[n] * (W - ml - mr), mt + (hi - avg[i]) / (hi - lo) * (H - mt - mb)
    printf "\"/>\n<polyline fill=\"none\" stroke=\"#d62728\" stroke-width=\"2\" points=\""
    for (i = 1; i <= m; i++)
      printf "%.1f,%.1f ", ml + hs[i] / st[n] * (W - ml - mr), mt + (hi - hl[i]) / (hi - lo) * (H - mt - mb)
    printf "\"/>\n"
    for (i = 1; i <= m; i++)
      printf "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"#d62728\"/>\n", ml + hs[i] / st[n] * (W - ml - mr),
             mt + (hi - hl[i]) / (hi - lo) * (H - mt - mb)
    printf "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%.1f</text>\n", ml - 6, mt + 4, hi
    printf "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%.1f</text>\n", ml - 6, H - mb, lo
    printf "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">0</text>\n", ml, H - mb + 18
    printf "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%d</text>\n", W - mr, H - mb + 18, st[n]
    printf "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">step</text>\n", (ml + W - mr) / 2, H - 12
    printf "<text x=\"%d\" y=\"18\" text-anchor=\"middle\">masked-patch loss: <tspan fill=\"#08519c\">training ", (ml + W - mr) / 2
    printf "(moving average of 200 steps)</tspan>, <tspan fill=\"#d62728\">held-out photographs (%d checkpoints)</tspan></text>\n", m
    printf "</svg>\n" }' "$run/loss.csv" "$out/heldout.csv" > "$out/loss.svg.tmp"
mv "$out/loss.svg.tmp" "$out/loss.svg"
