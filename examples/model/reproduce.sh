#!/usr/bin/env bash
# Reproduces the bundled model (examples/model) from Debian's packages, with no network beyond
# apt and no Python: fetches python3-skimage and python3-scipy with `apt-get download`, unpacks
# them with dpkg-deb, assembles the training photos (chelsea.png is held out), pre-trains with
# vitmae-pretrain and stores the result as float16 with vitmae-convert.
#
# usage: examples/model/reproduce.sh [BUILD_DIR]   (default: build; run from the repository root)
# Takes about 28 minutes on an idle 2-core machine (one training thread at 171 images/s plus a
# decoding worker; the shipped run took 42 minutes beside a second candidate run). The weights are bit-reproducible for the
# same thread count (1) and machine type with Eigen's products, which this script selects
# (VITMAE_BACKEND=eigen: the shipped model predates oneDNN, whose products round differently);
# another CPU may round differently.
set -euo pipefail
export VITMAE_BACKEND=${VITMAE_BACKEND:-eigen}
cd "$(dirname "$0")/../.."
build=${1:-build}
work=$(mktemp -d /tmp/vitmae-model.XXXXXX)
trap 'rm -rf "$work/debs" "$work/x"' EXIT
[ -x "$build/examples/vitmae-pretrain" ] || { cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release && cmake --build "$build" -j2; }

mkdir -p "$work/debs" "$work/x" "$work/data"
(cd "$work/debs" && apt-get download python3-skimage python3-scipy)
for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$work/x"; done
sk="$work/x/usr/lib/python3/dist-packages/skimage/data"
sp="$work/x/usr/lib/python3/dist-packages/scipy/misc"
# Public-domain and CC0 photographs (see examples/model/NOTICE); never chelsea.png.
for f in astronaut.png camera.png coffee.png rocket.jpg hubble_deep_field.jpg retina.jpg brick.png grass.png \
         gravel.png coins.png clock_motion.png ihc.png cell.png; do
  cp "$sk/$f" "$work/data/"
done
# scipy's raccoon face: raw 1024x768 RGB bytes, bzip2-compressed; give it a PPM header.
(printf 'P6\n1024 768\n255\n'; bunzip2 -c "$sp/face.dat") > "$work/data/face.ppm"

"$build/examples/vitmae-pretrain" --data "$work/data" --out "$work/run" --config examples/model/train_config.json \
  --steps 4500 --batch 64 --lr 1e-3 --min-lr 1e-5 --warmup 300 --clip-grad 1 --seed 0 --threads 1 \
  --scale-min 0.05 --vflip --transpose --channel-shuffle --save-every 750 --keep 10 | tee "$work/train.log"
"$build/examples/vitmae-convert" --input "$work/run/final" --out examples/model --dtype float16
cp "$work/run/loss.csv" "$work/run/loss.svg" examples/model/
echo "model written to examples/model (training run kept in $work)"
