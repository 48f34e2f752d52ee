#!/usr/bin/env bash
# Reproduces the bundled model (examples/model) from Debian's packages, with no network beyond
# apt and no Python: gathers the photographs with photos.sh (388 to train on, 28 held out, never
# trained on), pre-trains with vitmae-pretrain on the training photographs, weighted by subject,
# stores the result as float16 with vitmae-convert, scores each checkpoint and the model on the
# held-out photographs with heldout.sh (heldout.csv, loss.svg, heldout.txt) and draws the panels.
#
# usage: examples/model/reproduce.sh [BUILD_DIR]   (default: build; run from the repository root)
# Takes about 100 minutes on an idle 2-core machine (92 of training): two MPI ranks of one thread
# each (69.9 images/s on this project's 2-core AMD EPYC, against 67.9 for one process of two
# threads: the same bits, tested). Without mpirun it runs one process of two threads, with the same
# result. The weights are bit-reproducible for the same machine type (another CPU may round
# oneDNN's products differently).
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
work=$(mktemp -d /tmp/vitmae-model.XXXXXX)
[ -x "$build/examples/vitmae-pretrain" ] || { cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release && cmake --build "$build" -j2; }

examples/model/photos.sh "$work/photos"
# The training list, in photos.sh's order: most photographs are Endless Sky's landscapes, so each
# animal is listed 4 times, each photograph of people 3 times and each object 2 times.
grep -E '^train\|' examples/model/photos.sh | awk -F'|' -v dir="$work/photos/train" '{
  k = $5 == "animal" ? 4 : $5 == "people" ? 3 : $5 == "object" ? 2 : 1
  for (i = 0; i < k; ++i) print dir "/" $4 }' > "$work/train.txt"

train=("$build/examples/vitmae-pretrain" --data "$work/train.txt" --out "$work/run"
  --config examples/model/train_config.json --steps 6000 --batch 64 --lr 1e-3 --min-lr 1e-5 --warmup 500
  --clip-grad 1 --seed 0 --scale-min 0.1 --save-every 1000 --keep 100 --log-every 250)
if command -v mpirun >/dev/null; then
  mpirun --allow-run-as-root -np 2 "${train[@]}" --threads 1 | tee "$work/train.log"
else
  "${train[@]}" --threads 2 | tee "$work/train.log"
fi
"$build/examples/vitmae-convert" --input "$work/run/final" --out examples/model --dtype float16
cp "$work/run/loss.csv" examples/model/

# The figures: the held-out loss of every checkpoint and the curves (heldout.csv, loss.svg), the
# held-out table of the model as shipped (float16), the README's panel and the grid of 8 held-out
# photographs with the masks of seeds 0 and 1.
rm -f examples/model/heldout.csv  # the shipped run's: every checkpoint of this run is scored
BUILD=$build examples/model/curves.sh "$work/run" "$work/photos/heldout" examples/model
BUILD=$build examples/model/heldout.sh examples/model "$work/photos/heldout"/* > examples/model/heldout.txt
"$build/examples/vitmae-reconstruct" --out examples/model/panel_chelsea.png --seed 0
grid=()
for f in china.jpg flower.jpg matplotlib-grace_hopper.jpg palapeli-panther-chameleon-female.jpg \
         lxqt-Butterfly-Kenneth-Wimer.jpg kphotoalbum-pool.jpg scratch-building-at-mit.jpg \
         endlesssky-land-sea17-harro.jpg; do
  grid+=(--image "$work/photos/heldout/$f")
done
for seed in 0 1; do
  "$build/examples/vitmae-reconstruct" "${grid[@]}" --out "examples/model/heldout_seed$seed.png" --seed "$seed" \
    > "$work/heldout_seed$seed.txt"
done
echo "model written to examples/model (training run kept in $work)"
