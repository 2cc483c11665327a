"""Latency profile of a converted ONNX model with ONNX Runtime on this node's CPU: p50/p95/mean over N timed runs."""
import argparse
import os
import time

import numpy as np
import onnxruntime as ort

from llmhub_convert import get_bytes, run_step


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--target", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--result", required=True)
    a = p.parse_args()

    def step():
        opts = ort.SessionOptions()
        # One thread: comparable figures on a shared node, and the way a CPU Triton instance is usually sized.
        opts.intra_op_num_threads = 1
        sess = ort.InferenceSession(get_bytes(a.model), opts, providers=["CPUExecutionProvider"])
        in_dim = sess.get_inputs()[0].shape[1]
        x = np.random.default_rng(0).standard_normal((a.batch, in_dim)).astype(np.float32)
        for _ in range(min(10, a.runs)):
            sess.run(None, {"input": x})
        times = []
        for _ in range(a.runs):
            t = time.perf_counter()
            sess.run(None, {"input": x})
            times.append((time.perf_counter() - t) * 1000)
        t = np.asarray(times)
        return {
            "ok": True,
            "target": a.target,
            "runs": a.runs,
            "batch": a.batch,
            "p50Ms": float(np.percentile(t, 50)),
            "p95Ms": float(np.percentile(t, 95)),
            "meanMs": float(t.mean()),
            "device": f"cpu ({os.cpu_count()} cores visible), onnxruntime {ort.__version__}",
        }, 0

    run_step(step, a.result)


if __name__ == "__main__":
    main()
