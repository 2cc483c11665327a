"""Correctness check: ONNX Runtime outputs of a converted model vs the numpy reference forward of the same weights.

Relative error = max |y - y_ref| / max |y_ref| over all validation samples. Within the tolerance the checked model
is published (--publish-to, the Triton layout's model file); outside it, the measured error is reported and the
program exits 1, so the Job fails and nothing is published.
"""
import argparse

import onnxruntime as ort

from llmhub_convert import check_against_reference, get_bytes, publish, read_mlp, reference_forward, run_step, validation_samples


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--target", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--tolerance", required=True, type=float, help="maximum relative error")
    p.add_argument("--samples", help="s3 URI of a JSON [[...], ...]; else generated")
    p.add_argument("--sample-count", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--publish-to", required=True)
    p.add_argument("--result", required=True)
    a = p.parse_args()

    def step():
        layers = read_mlp(get_bytes(a.weights))
        model = get_bytes(a.model)
        x = validation_samples(a.samples, a.sample_count, a.seed, layers[0][0].shape[1])
        sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        y = sess.run(["output"], {"input": x})[0]
        result = check_against_reference(a.target, y, reference_forward(layers, x), a.tolerance)
        if not result["passed"]:
            return result, 1
        return publish(result, a.publish_to, model)

    run_step(step, a.result)


if __name__ == "__main__":
    main()
