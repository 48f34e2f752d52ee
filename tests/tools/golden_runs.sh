#!/usr/bin/env bash
# The two fixed-seed runs whose final weights must keep their bytes through a refactor of the
# training code (issue 25): a 30-step pre-training of the first bundled model's config on five bundled
# photos and a 50-step fine-tuning of examples/fashion-mnist/mae with 10 labels per class, every
# recipe flag given. Prints "pretrain THREADS SHA256" and "finetune THREADS SHA256" lines.
# The bytes depend on the CPU's instruction set (products and exp): compare runs on one machine.
# usage: tests/tools/golden_runs.sh BUILD_DIR [THREADS...]   (default threads: 1 2)
set -euo pipefail
cd "$(dirname "$0")/../.."
bin="$1/examples"; shift
threads=("${@:-1}"); [ $# -gt 0 ] || threads=(1 2)
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
mkdir -p "$work/photos" "$work/fm"
# The bundled model's configuration until issue 29 (the hashes in golden_runs.txt are of this shape).
cat > "$work/config.json" <<'JSON'
{
  "hidden_size": 192, "num_hidden_layers": 6, "num_attention_heads": 3, "intermediate_size": 768,
  "decoder_hidden_size": 128, "decoder_num_hidden_layers": 2, "decoder_num_attention_heads": 4, "decoder_intermediate_size": 512,
  "image_size": 64, "patch_size": 8, "num_channels": 3, "mask_ratio": 0.75, "norm_pix_loss": false,
  "hidden_act": "gelu", "layer_norm_eps": 1e-6, "qkv_bias": true, "initializer_range": 0.02
}
JSON
cp tests/data/images/{astronaut,camera,chelsea,coffee}.png tests/data/images/rocket.jpg "$work/photos/"
for k in images-idx3-ubyte labels-idx1-ubyte; do ln -s "$PWD/tests/data/fashion-mnist/t1k-$k.gz" "$work/fm/t10k-$k.gz"; done
for t in "${threads[@]}"; do
  "$bin/vitmae-pretrain" --data "$work/photos" --out "$work/pre$t" --config "$work/config.json" \
    --steps 30 --batch 16 --accum 2 --lr 1e-3 --min-lr 1e-5 --warmup 5 --weight-decay 0.05 --clip-grad 1 \
    --mask-ratio 0.75 --seed 7 --scale-min 0.05 --shorter-side 256 --vflip --transpose --channel-shuffle \
    --save-every 10 --keep 2 --threads "$t" --workers 0 --log-every 10 >/dev/null 2>&1
  echo "pretrain $t $(sha256sum < "$work/pre$t/final/model.safetensors" | cut -d' ' -f1)"
  "$bin/vitmae-finetune" --train "fashion-mnist:$work/fm:t10k" --val "fashion-mnist:$work/fm:t10k" \
    --out "$work/ft$t" --init examples/fashion-mnist/mae --labels-per-class 10 --steps 50 --batch 16 --accum 2 \
    --base-lr 4e-3 --min-lr 1e-6 --warmup-steps 5 --weight-decay 0.05 --layer-decay 0.75 --label-smoothing 0.1 \
    --clip-grad 1 --crop-scale-min 0.2 --eval-every 25 --seed 3 --save-every 20 --keep 2 --threads "$t" >/dev/null 2>&1
  echo "finetune $t $(sha256sum < "$work/ft$t/final/model.safetensors" | cut -d' ' -f1)"
done
