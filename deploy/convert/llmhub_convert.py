"""Shared pieces of the conversion programs: S3 I/O, the llmhub-mlp format, its numpy reference, step results.

Every program reads its inputs from and writes its outputs to S3 (s3://bucket/key) and ends by writing a small
JSON result object that the workflow's activity reads back, so a Job's outcome never depends on pod logs.
Credentials come from the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, from a Secret in production).
"""
import hashlib
import json
import os
import re
import sys
import traceback

import numpy as np

_client = None


def s3():
    global _client
    if _client is None:
        import boto3
        from botocore.config import Config

        path_style = os.environ.get("S3_FORCE_PATH_STYLE", "true") != "false"
        _client = boto3.client(
            "s3",
            endpoint_url=os.environ.get("S3_ENDPOINT") or None,
            region_name=os.environ.get("S3_REGION", "us-east-1"),
            config=Config(s3={"addressing_style": "path" if path_style else "auto"}, retries={"max_attempts": 3}),
        )
    return _client


def _ref(uri):
    m = re.match(r"^s3://([^/]+)/(.+)$", uri)
    if not m:
        raise ValueError(f"'{uri}' is not an object URI of the form s3://bucket/key")
    return m.group(1), m.group(2)


def get_bytes(uri):
    bucket, key = _ref(uri)
    return s3().get_object(Bucket=bucket, Key=key)["Body"].read()


def put_bytes(uri, data, content_type="application/octet-stream"):
    bucket, key = _ref(uri)
    s3().put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def read_mlp(data):
    """llmhub-mlp: F32 tensors layers.{i}.weight [out, in] and layers.{i}.bias [out]; tanh after all but the last."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    meta = header.pop("__metadata__", {}) or {}
    if meta.get("format") != "llmhub-mlp":
        raise ValueError(f"not an llmhub-mlp file (metadata format={meta.get('format')!r})")
    if meta.get("activation", "tanh") != "tanh":
        raise ValueError(f"activation {meta.get('activation')!r} is not supported (tanh only)")
    start = 8 + n

    def tensor(name):
        e = header.get(name)
        if e is None:
            raise ValueError(f"tensor {name} is missing")
        if e["dtype"] != "F32":
            raise ValueError(f"tensor {name}: dtype {e['dtype']} is not supported (F32 only)")
        a, b = e["data_offsets"]
        return np.frombuffer(data[start + a : start + b], dtype="<f4").reshape(e["shape"])

    layers = []
    while f"layers.{len(layers)}.weight" in header:
        i = len(layers)
        w, b = tensor(f"layers.{i}.weight"), tensor(f"layers.{i}.bias")
        if w.ndim != 2 or b.shape != (w.shape[0],):
            raise ValueError(f"layer {i}: weight {list(w.shape)} and bias {list(b.shape)} do not form a linear layer")
        if layers and layers[-1][0].shape[0] != w.shape[1]:
            raise ValueError(f"layer {i}: input size {w.shape[1]} does not match the previous output {layers[-1][0].shape[0]}")
        layers.append((w, b))
    if not layers:
        raise ValueError("no layers.0.weight: not an llmhub-mlp file")
    return layers


def reference_forward(layers, x):
    """The model's meaning, in float64, independent of ONNX: what every converted artifact is checked against."""
    y = x.astype(np.float64)
    for i, (w, b) in enumerate(layers):
        y = y @ w.astype(np.float64).T + b.astype(np.float64)
        if i < len(layers) - 1:
            y = np.tanh(y)
    return y


def check_against_reference(target, y, ref, tolerance):
    """The check every target passes before it is published: max |y - y_ref| / max |y_ref| within the tolerance."""
    abs_err = float(np.max(np.abs(np.asarray(y, dtype=np.float64) - ref)))
    scale = float(np.max(np.abs(ref)))
    rel_err = abs_err / scale if scale > 0 else abs_err
    passed = bool(rel_err <= tolerance)
    result = {"ok": True, "target": target, "passed": passed, "maxAbsError": abs_err, "maxRelError": rel_err, "tolerance": tolerance,
              "samples": int(np.asarray(y).shape[0])}
    if not passed:
        result["error"] = f"{target}: max relative error {rel_err:.3g} (max abs {abs_err:.3g}) exceeds the tolerance {tolerance:g}"
    return result


def publish(result, uri, data):
    """Writes a checked artifact to its place in the Triton layout; the result names it with its hash and size."""
    put_bytes(uri, data)
    result.update({"publishedUri": uri, "sha256": sha256(data), "sizeBytes": len(data)})
    return result, 0


def validation_samples(samples_uri, count, seed, in_dim):
    if samples_uri:
        rows = json.loads(get_bytes(samples_uri))
        widths = sorted({len(r) for r in rows if isinstance(r, list)})
        if len(widths) > 1:
            raise ValueError(f"validation samples have rows of {widths} values; the model takes {in_dim} per row")
        x = np.asarray(rows, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != in_dim:
            raise ValueError(f"validation samples have shape {list(x.shape)}; the model takes [n, {in_dim}]")
        return x
    return np.random.default_rng(seed).standard_normal((count, in_dim)).astype(np.float32)


def run_step(main, result_uri):
    """Runs a step's main(): its dict result (or the error) goes to result_uri; the exit code tells the Job's outcome."""
    try:
        result, exit_code = main()
    except Exception as err:  # noqa: BLE001 - any failure becomes the step's reported reason
        traceback.print_exc()
        result, exit_code = {"ok": False, "error": f"{type(err).__name__}: {err}"}, 2
    put_bytes(result_uri, json.dumps(result).encode(), "application/json")
    print(json.dumps(result))
    sys.exit(exit_code)
