#!/usr/bin/env bash
# Scores a ViTMAEForPreTraining folder on images it never saw: for each image, vitmae-reconstruct's
# masked-patch loss and mean-fill baseline (every hidden patch filled with the mean colour of the
# visible ones) at mask ratio 0.75, each summed over the masks of seeds 0 to 9, and their ratio;
# then the mean of the ratios and of the losses. One line an image, then the mean:
#   NAME LOSS BASELINE RATIO         (NAME: the file's name; LOSS and BASELINE: means over the 10 masks)
#   mean N_IMAGES MEAN_LOSS MEAN_RATIO
#
# usage: examples/model/heldout.sh MODEL_DIR IMAGE...   (BUILD=DIR: the build folder, default build)
# Eigen's products on one thread (VITMAE_BACKEND=eigen), so that the figures do not depend on the
# machine's oneDNN; about 0.9 s an image with the bundled model.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 MODEL_DIR IMAGE..." >&2; exit 2; }
build=${BUILD:-build}
model=$1
shift
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
images=()
for f in "$@"; do images+=(--image "$f"); done
for seed in 0 1 2 3 4 5 6 7 8 9; do
  VITMAE_BACKEND=eigen "$build/examples/vitmae-reconstruct" --model "$model" "${images[@]}" --out "$tmp/panel.png" \
    --mask-ratio 0.75 --seed "$seed" --threads 1 >"$tmp/out"
  grep ': masked-patch loss ' "$tmp/out"
done | awk '{ name = $0; sub(/: masked-patch loss .*/, "", name)
              if (!(name in loss)) order[++n] = name
              loss[name] += $(NF - 5); base[name] += $(NF - 2) }
  END { for (i = 1; i <= n; ++i) {
          k = order[i]; r = loss[k] / base[k]; sum_r += r; sum_l += loss[k] / 10
          name = k; sub(/.*\//, "", name)
          printf "%s %.4f %.4f %.3f\n", name, loss[k] / 10, base[k] / 10, r }
        printf "mean %d %.4f %.3f\n", n, sum_l / n, sum_r / n }'
