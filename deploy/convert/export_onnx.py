"""Exports an llmhub-mlp safetensors model to ONNX (opset 17) built with onnx.helper: no framework needed."""
import argparse

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from llmhub_convert import get_bytes, put_bytes, read_mlp, run_step, sha256

OPSET = 17


def build(layers):
    nodes, inits, prev = [], [], "input"
    for i, (w, b) in enumerate(layers):
        # MatMul with the transposed weight: y = x W^T + b, the layer's definition.
        inits += [numpy_helper.from_array(np.ascontiguousarray(w.T), f"layers.{i}.weight_t"), numpy_helper.from_array(b.copy(), f"layers.{i}.bias")]
        last = i == len(layers) - 1
        out = "output" if last else f"h{i}"
        nodes += [helper.make_node("MatMul", [prev, f"layers.{i}.weight_t"], [f"mm{i}"]), helper.make_node("Add", [f"mm{i}", f"layers.{i}.bias"], [f"lin{i}" if not last else out])]
        if not last:
            nodes.append(helper.make_node("Tanh", [f"lin{i}"], [out]))
        prev = out
    in_dim, out_dim = layers[0][0].shape[1], layers[-1][0].shape[0]
    graph = helper.make_graph(
        nodes,
        "llmhub-mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", in_dim])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", out_dim])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="llmhub-convert")
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    return model, in_dim, out_dim


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--weights", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--result", required=True)
    a = p.parse_args()

    def step():
        layers = read_mlp(get_bytes(a.weights))
        model, in_dim, out_dim = build(layers)
        data = model.SerializeToString()
        put_bytes(a.out, data)
        return {"ok": True, "uri": a.out, "sha256": sha256(data), "sizeBytes": len(data), "inputDim": int(in_dim), "outputDim": int(out_dim), "layers": len(layers), "opset": OPSET}, 0

    run_step(step, a.result)


if __name__ == "__main__":
    main()
