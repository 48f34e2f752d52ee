#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Exports a ViTMAE checkpoint folder (config.json + model.safetensors, HF names) to ONNX for the
ONNX Runtime comparison of examples/bench/ort_bench.js.

The model is HF transformers' ViTMAEForPreTraining forward written out in plain PyTorch (Debian's
python3-torch; transformers is not a Debian package), with the masking noise as an input, as
ViTMAEForPreTraining.forward(pixel_values, noise=...). Before exporting, it is checked against the
PyTorch fixture tests/data/hf/tiny (last_hidden_state, logits, loss within 1e-4).

usage: export_onnx.py MODEL_DIR OUT_DIR [--batch 1 --batch 8]
writes OUT_DIR/pretrain_b{N}.onnx (inputs pixel_values, noise; outputs loss, logits, mask) and
OUT_DIR/features_b1.onnx (mask_ratio 0: output last_hidden_state).
"""
import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I64": np.int64}


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in DTYPES:
            sys.exit(f"{path}: tensor {name} has dtype {info['dtype']}, expected one of {sorted(DTYPES)}")
        b, e = info["data_offsets"]
        a = np.frombuffer(data[b:e], dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
        out[name] = torch.from_numpy(a.astype(np.float32) if a.dtype == np.float16 else a.copy())
    return out


def gelu(x, kind):
    if kind == "gelu":
        return F.gelu(x)
    if kind in ("gelu_new", "gelu_pytorch_tanh"):
        return F.gelu(x, approximate="tanh")
    if kind == "relu":
        return F.relu(x)
    sys.exit(f"hidden_act {kind!r} is not supported by this exporter")


class ViTMAE(torch.nn.Module):
    """ViTMAEForPreTraining (features_only: ViTMAEModel's last_hidden_state)."""

    def __init__(self, config, weights, mask_ratio=None, features_only=False):
        super().__init__()
        self.c = dict(config)
        if mask_ratio is not None:
            self.c["mask_ratio"] = mask_ratio
        self.features_only = features_only
        self.w = torch.nn.ParameterDict()
        self.names = {}
        for i, (k, v) in enumerate(weights.items()):
            key = f"p{i}"
            self.names[k] = key
            self.w[key] = torch.nn.Parameter(v.float(), requires_grad=False)

    def p(self, name):
        return self.w[self.names[name]]

    def linear(self, x, prefix):
        b = self.names.get(prefix + "bias")
        return F.linear(x, self.p(prefix + "weight"), self.w[b] if b else None)

    def layer(self, x, prefix, heads, eps):
        B, T, D = x.shape
        d = D // heads
        h = F.layer_norm(x, (D,), self.p(prefix + "layernorm_before.weight"), self.p(prefix + "layernorm_before.bias"), eps)
        q, k, v = (self.linear(h, prefix + f"attention.attention.{n}.").view(B, T, heads, d).transpose(1, 2)
                   for n in ("query", "key", "value"))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d)
        ctx = torch.matmul(scores.softmax(-1), v).transpose(1, 2).reshape(B, T, D)
        x = x + self.linear(ctx, prefix + "attention.output.dense.")
        h = F.layer_norm(x, (D,), self.p(prefix + "layernorm_after.weight"), self.p(prefix + "layernorm_after.bias"), eps)
        h = gelu(self.linear(h, prefix + "intermediate.dense."), self.c.get("hidden_act", "gelu"))
        return x + self.linear(h, prefix + "output.dense.")

    def forward(self, pixel_values, noise):
        c = self.c
        eps = c.get("layer_norm_eps", 1e-12)
        p = c["patch_size"]
        x = F.conv2d(pixel_values, self.p("vit.embeddings.patch_embeddings.projection.weight"),
                     self.p("vit.embeddings.patch_embeddings.projection.bias"), stride=p)
        x = x.flatten(2).transpose(1, 2)  # (B, L, D)
        B, L, D = x.shape
        pos = self.p("vit.embeddings.position_embeddings")
        x = x + pos[:, 1:, :]
        len_keep = int(L * (1 - c["mask_ratio"]))
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :len_keep]
        x = torch.gather(x, 1, ids_keep.unsqueeze(-1).repeat(1, 1, D))
        mask = torch.ones(B, L)
        mask[:, :len_keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        cls = self.p("vit.embeddings.cls_token") + pos[:, :1, :]
        x = torch.cat([cls.expand(B, -1, -1), x], dim=1)
        for i in range(c["num_hidden_layers"]):
            x = self.layer(x, f"vit.encoder.layer.{i}.", c["num_attention_heads"], eps)
        x = F.layer_norm(x, (D,), self.p("vit.layernorm.weight"), self.p("vit.layernorm.bias"), eps)
        if self.features_only:
            return x
        # Decoder.
        x = self.linear(x, "decoder.decoder_embed.")
        Dd = x.shape[-1]
        mask_tokens = self.p("decoder.mask_token").repeat(B, L + 1 - x.shape[1], 1)
        x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)
        x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).repeat(1, 1, Dd))
        x = torch.cat([x[:, :1, :], x_], dim=1) + self.p("decoder.decoder_pos_embed")
        for i in range(c["decoder_num_hidden_layers"]):
            x = self.layer(x, f"decoder.decoder_layers.{i}.", c["decoder_num_attention_heads"], eps)
        x = F.layer_norm(x, (Dd,), self.p("decoder.decoder_norm.weight"), self.p("decoder.decoder_norm.bias"), eps)
        logits = self.linear(x, "decoder.decoder_pred.")[:, 1:, :]
        # Loss: patchify as HF ((h, w, p, q, c) order), mean over the masked patches.
        C = pixel_values.shape[1]
        hp, wp = pixel_values.shape[2] // p, pixel_values.shape[3] // p
        target = pixel_values.reshape(B, C, hp, p, wp, p).permute(0, 2, 4, 3, 5, 1).reshape(B, hp * wp, p * p * C)
        if c.get("norm_pix_loss", False):
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        loss = ((logits - target) ** 2).mean(dim=-1)
        loss = (loss * mask).sum() / mask.sum()
        return loss, logits, mask


def check_fixture():
    d = os.path.join(HERE, "..", "..", "tests", "data", "hf", "tiny")
    config = json.load(open(os.path.join(d, "config.json")))
    io = read_safetensors(os.path.join(d, "io.safetensors"))
    m = ViTMAE(config, read_safetensors(os.path.join(d, "model.safetensors")))
    f = ViTMAE(config, read_safetensors(os.path.join(d, "model.safetensors")), features_only=True)
    with torch.no_grad():
        loss, logits, mask = m(io["pixel_values"], io["noise"])
        hidden = f(io["pixel_values"], io["noise"])
    errs = {
        "loss": (loss - io["loss"]).abs().max().item(),
        "logits": (logits - io["logits"]).abs().max().item(),
        "mask": (mask - io["mask"].float()).abs().max().item(),
        "last_hidden_state": (hidden - io["last_hidden_state"]).abs().max().item(),
    }
    bad = {k: v for k, v in errs.items() if not v <= 1e-4}
    if bad:
        sys.exit(f"export_onnx.py: the PyTorch model disagrees with tests/data/hf/tiny: {bad}")
    print("checked against tests/data/hf/tiny: max abs error " + ", ".join(f"{k} {v:.1e}" for k, v in errs.items()))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("out_dir")
    ap.add_argument("--batch", type=int, action="append")
    a = ap.parse_args()
    check_fixture()
    config = json.load(open(os.path.join(a.model_dir, "config.json")))
    weights = read_safetensors(os.path.join(a.model_dir, "model.safetensors"))
    os.makedirs(a.out_dir, exist_ok=True)
    C, S, p = config.get("num_channels", 3), config.get("image_size", 224), config["patch_size"]
    L = (S // p) ** 2
    jobs = [(f"pretrain_b{b}", b, ViTMAE(config, weights), ["loss", "logits", "mask"]) for b in (a.batch or [1, 8])]
    jobs.append(("features_b1", 1, ViTMAE(config, weights, mask_ratio=0.0, features_only=True), ["last_hidden_state"]))
    shapes = {}
    for name, b, model, outputs in jobs:
        model.eval()
        px, noise = torch.randn(b, C, S, S), torch.rand(b, L)
        path = os.path.join(a.out_dir, name + ".onnx")
        torch.onnx.export(model, (px, noise), path, input_names=["pixel_values", "noise"], output_names=outputs,
                          opset_version=14, do_constant_folding=True)
        shapes[name] = {"pixel_values": list(px.shape), "noise": list(noise.shape)}
        print(f"wrote {path}")
    with open(os.path.join(a.out_dir, "shapes.json"), "w") as f:
        json.dump(shapes, f)


if __name__ == "__main__":
    main()
