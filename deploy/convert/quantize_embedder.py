"""Per-channel dynamic int8 quantisation of the default embedding model (all-MiniLM-L6-v2 "int8" from PyPI).

That model is int8 only on disk: each weight is a Cast(int8) x scale pair that onnxruntime evaluates once at load,
so it runs as float32 MatMuls. Folding those pairs into float32 initializers and quantising dynamically per
output channel gives MatMulInteger kernels (per-tensor scales lost too much: cosine 0.94 against the current vectors).

    python quantize_embedder.py --model in/model.onnx --out out/model.onnx [--reduce-range]
"""
import argparse
import os
import tempfile

import onnx
from onnx import numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic


def fold_dequantize(model):
    """Replaces every Cast(initializer) -> Mul(., initializer) pair by one float32 initializer."""
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    consumers = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    drop, folded = set(), []
    for cast in g.node:
        if cast.op_type != "Cast" or cast.input[0] not in inits:
            continue
        uses = consumers.get(cast.output[0], [])
        if len(uses) != 1 or uses[0].op_type != "Mul":
            continue
        mul = uses[0]
        scale_name = mul.input[1] if mul.input[0] == cast.output[0] else mul.input[0]
        if scale_name not in inits:
            continue
        q = numpy_helper.to_array(inits[cast.input[0]]).astype("float32")
        w = (q * numpy_helper.to_array(inits[scale_name]).astype("float32")).astype("float32")
        folded.append(numpy_helper.from_array(w, mul.output[0]))
        drop.update([id(cast), id(mul)])
    kept = [n for n in g.node if id(n) not in drop]
    del g.node[:]
    g.node.extend(kept)
    g.initializer.extend(folded)
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    live = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(live)
    return len(folded)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    # 7-bit weights: CPUs without VNNI saturate u8 x s8 products in int16 (see optimize.py).
    p.add_argument("--reduce-range", action="store_true")
    a = p.parse_args()
    model = onnx.load(a.model)
    n = fold_dequantize(model)
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "float.onnx")
        onnx.save(model, src)
        quantize_dynamic(src, a.out, weight_type=QuantType.QInt8, per_channel=True, reduce_range=a.reduce_range)
    print(f"quantize_embedder: folded {n} dequantize pairs, wrote {a.out}")


if __name__ == "__main__":
    main()
