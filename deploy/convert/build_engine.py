"""TensorRT engine build, correctness check and latency profile with trtexec, on a GPU node (Dockerfile.tensorrt).

Where no engine can be built (no trtexec, or no GPU visible to the process) nothing is published and the result
says `not_run` with the reason: a model.plan exists only when TensorRT really built and checked one.
Not run in this repository's tests (no GPU, no TensorRT there): only its not_run path has been executed.
"""
import argparse
import json
import os
import shutil
import subprocess
import tempfile

import numpy as np

from llmhub_convert import check_against_reference, get_bytes, publish, read_mlp, reference_forward, run_step, validation_samples


def unavailable():
    if shutil.which("trtexec") is None:
        return "no TensorRT on this node (trtexec is not on PATH)"
    try:
        gpus = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"no GPU visible to the engine build (nvidia-smi: {err})"
    if gpus.returncode != 0 or "GPU" not in gpus.stdout:
        return f"no GPU visible to the engine build (nvidia-smi -L: {gpus.stderr.strip() or gpus.stdout.strip()})"
    return None


def trtexec(*args):
    out = subprocess.run(["trtexec", *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"trtexec {args[0]} failed ({out.returncode}): {out.stdout[-2000:]}{out.stderr[-2000:]}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True, help="the exported ONNX model")
    p.add_argument("--weights", required=True)
    p.add_argument("--precision", choices=["fp32", "fp16"], default="fp16")
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--tolerance", required=True, type=float)
    p.add_argument("--samples")
    p.add_argument("--sample-count", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--publish-to", required=True)
    p.add_argument("--result", required=True)
    a = p.parse_args()

    def step():
        reason = unavailable()
        if reason:
            return {"ok": True, "target": "tensorrt", "status": "not_run", "reason": reason}, 0
        layers = read_mlp(get_bytes(a.weights))
        in_dim = layers[0][0].shape[1]
        x = validation_samples(a.samples, a.sample_count, a.seed, in_dim)
        n = min(x.shape[0], a.max_batch)
        x = x[:n]
        with tempfile.TemporaryDirectory() as tmp:
            onnx_path, plan, xin = (os.path.join(tmp, f) for f in ("model.onnx", "model.plan", "input.bin"))
            out_json, times_json = os.path.join(tmp, "out.json"), os.path.join(tmp, "times.json")
            with open(onnx_path, "wb") as f:
                f.write(get_bytes(a.model))
            shapes = [f"--minShapes=input:1x{in_dim}", f"--optShapes=input:{n}x{in_dim}", f"--maxShapes=input:{a.max_batch}x{in_dim}"]
            trtexec(f"--onnx={onnx_path}", f"--saveEngine={plan}", *shapes, *(["--fp16"] if a.precision == "fp16" else []))
            x.tofile(xin)
            trtexec(f"--loadEngine={plan}", f"--shapes=input:{n}x{in_dim}", f"--loadInputs=input:{xin}", f"--exportOutput={out_json}",
                    f"--exportTimes={times_json}", f"--iterations={a.runs}", "--warmUp=200")
            with open(out_json) as f:
                outputs = {o["name"]: o for o in json.load(f)}
            y = np.asarray(outputs["output"]["values"], dtype=np.float64).reshape(n, -1)
            with open(times_json) as f:
                lat = np.asarray([t["latencyMs"] for t in json.load(f)])
            latency = {"runs": int(lat.size), "batch": n, "p50Ms": float(np.percentile(lat, 50)), "p95Ms": float(np.percentile(lat, 95)), "meanMs": float(lat.mean()), "device": "gpu (trtexec)"}
            result = {**check_against_reference("tensorrt", y, reference_forward(layers, x), a.tolerance), "status": "built", "latency": latency}
            if not result["passed"]:
                return result, 1
            with open(plan, "rb") as f:
                data = f.read()
        return publish(result, a.publish_to, data)

    run_step(step, a.result)


if __name__ == "__main__":
    main()
