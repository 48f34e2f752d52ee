#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""ONNX Runtime's int8 model of an export_onnx.py export, as
onnxruntime.quantization.quantize_dynamic(model, per_channel=True) makes it and ONNX Runtime then
runs it, written with Debian's python3-onnx (ORT's Python tools are not packaged in Debian).

Every MatMul whose B input is a constant float initializer (K, N) becomes com.microsoft
DynamicQuantizeMatMul(A, B_int8, b_scale, b_zero_point, bias):
- B in int8 per output column, symmetric, as ORT's quantizer does it for weight_type QInt8 with
  reduce_range False: scale = float32(2 max|B[:, n]| / 254) (1 for an all-zero column), B_int8 =
  round-half-even(B / scale) clipped to [-128, 127], zero points int8 0;
- A (the activation) is quantised by the operator itself at run time, to uint8 with one scale and
  zero point per tensor (quantize_dynamic's DynamicQuantizeLinear, which ORT fuses into this op);
- the bias: when the product's only consumer is an Add of a constant (N,) vector, it is folded in
  as the operator's fifth input (--keep-bias-add leaves that Add as it was; see below).

What quantize_dynamic does beside that and this script does not:
- it writes DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul, which ORT's graph optimiser
  fuses into DynamicQuantizeMatMul at session creation (the same arithmetic). ORT folds the
  bias Add only when the bias is the Add's second input; torch writes Add(bias, product), so
  ORT's own pipeline leaves those Adds separate. Folding them here makes ORT, if anything, faster.
- its default op list also turns a Conv (the patch projection) into ConvInteger with int8 weights,
  which ORT's CPU provider does not implement (u8u8 only: onnxruntime issues 3130, 15888); the
  Conv stays float32 here, as quantize_dynamic(op_types_to_quantize=["MatMul"]) leaves it.
- MatMuls with a computed B (attention's q k^T and p v) stay float32 in both (MatMulConstBOnly).

usage: quantize_onnx.py IN.onnx OUT.onnx [--keep-bias-add]
"""
import argparse
import collections
import sys

import numpy as np
import onnx
from onnx import helper, numpy_helper


def quantize_columns(w):
    """int8 weights, float32 scales and int8 zero points per column of w (K, N), as ORT's
    quantize_weight_per_channel_impl / compute_scale_zp / quantize_nparray do for symmetric int8."""
    w = w.astype(np.float32)
    absmax = np.maximum(np.abs(np.minimum(w.min(axis=0), 0)), np.abs(np.maximum(w.max(axis=0), 0)))
    scale = (2 * absmax).astype(np.float64) / 254.0  # qmin, qmax = -127, 127
    scale = np.where(scale < np.finfo(np.float32).tiny, 1.0, scale).astype(np.float32)
    q = np.clip(np.round(w / scale), -128, 127).astype(np.int8)  # np.round: half to even, as ORT
    return q, scale, np.zeros(scale.shape, np.int8)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--keep-bias-add", action="store_true",
                    help="leave each bias Add a separate node (as ORT's own fusion leaves torch's Add(bias, x))")
    a = ap.parse_args()
    model = onnx.load(a.input)
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    consumers = collections.defaultdict(list)
    for n in g.node:
        for i in n.input:
            consumers[i].append(n)
    graph_outputs = {o.name for o in g.output}
    identity = {n.output[0]: n.input[0] for n in g.node if n.op_type == "Identity"}

    def constant(name, ndim):
        """The float initializer of rank ndim that name is, or is an Identity of (torch's exporter
        writes each repeat of a value, such as the zero biases of a fresh init, as an Identity of one)."""
        while name in identity and name not in inits:
            name = identity[name]
        t = inits.get(name)
        return t if t is not None and t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == ndim else None

    new_nodes, dropped, added = [], set(), []
    done = {}  # weight name -> its quantised initializers' names (a weight shared by two products)
    count = collections.Counter()
    for n in g.node:
        if id(n) in dropped:
            continue
        count[n.op_type] += 1
        w = constant(n.input[1], 2) if n.op_type == "MatMul" else None
        if w is None:
            if n.op_type == "MatMul":
                count["MatMul left: B computed"] += 1
            new_nodes.append(n)
            continue
        if w.name not in done:
            q, scale, zp = quantize_columns(numpy_helper.to_array(w))
            names = (w.name + "_quantized", w.name + "_scale", w.name + "_zero_point")
            added += [numpy_helper.from_array(x, nm) for x, nm in zip((q, scale, zp), names)]
            done[w.name] = names
        inputs, output = [n.input[0], *done[w.name]], n.output[0]
        users = consumers[output]
        if not a.keep_bias_add and len(users) == 1 and users[0].op_type == "Add" and output not in graph_outputs:
            add = users[0]
            other = [i for i in add.input if i != output]
            b = constant(other[0], 1) if len(other) == 1 else None
            if b is not None and b.dims[0] == w.dims[1]:
                inputs.append(b.name)
                output = add.output[0]
                dropped.add(id(add))
                count["bias folded"] += 1
        new_nodes.append(helper.make_node("DynamicQuantizeMatMul", inputs, [output],
                                          name=(n.name or output) + "_quant", domain="com.microsoft"))
        count["MatMul quantised"] += 1
    while True:  # drop the Identity nodes the folded biases left unread
        read = {i for n in new_nodes for i in n.input} | graph_outputs
        kept_nodes = [n for n in new_nodes if n.op_type != "Identity" or n.output[0] in read]
        if len(kept_nodes) == len(new_nodes):
            break
        new_nodes = kept_nodes
    del g.node[:]
    g.node.extend(new_nodes)
    used = {i for n in g.node for i in n.input}
    kept = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(kept + added)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, a.output)
    products = count["MatMul"] + count["Gemm"] + count["Conv"]
    print(f"wrote {a.output}: {count['MatMul quantised']} of {products} products quantised "
          f"({count['MatMul']} MatMul, {count['Gemm']} Gemm, {count['Conv']} Conv); "
          f"left float32: {count['MatMul left: B computed']} MatMul with a computed B (attention), "
          f"{count['Gemm']} Gemm, {count['Conv']} Conv (the patch projection); "
          f"biases folded: {count['bias folded']}")
    if count["MatMul quantised"] == 0:
        sys.exit(f"{a.input}: no MatMul with a constant B: nothing quantised")


if __name__ == "__main__":
    main()
