"""Fuzz the serving API with malformed gRPC and REST requests.

    python -m benchmarks.serving_fuzz --requests 2000

Each malformed request must get the status TF Serving answers with (gRPC code, HTTP status), and
a valid request every few malformed ones must keep returning the right embedding.
"""

import base64
import json
import random
import time
import urllib.error
import urllib.request
from collections import Counter

import grpc
import numpy as np

from serving.client import EncoderClient
from serving.tensors import to_tensor_proto

INVALID, NOT_FOUND, PRECONDITION = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                                    grpc.StatusCode.FAILED_PRECONDITION)


def _images(rng, shape=(1, 64, 64, 1), dtype=np.float32):
    return np.random.default_rng(rng.randrange(2**32)).random(shape).astype(dtype)


def _grpc_cases(model):
    """name -> (build(rng) -> (model_spec fields, signature, inputs, output_filter), expected)."""
    def spec(**changes):
        return {"name": model, **changes}

    def image_inputs(rng):
        return {"images": _images(rng)}

    return {
        "unknown model": (lambda rng: (spec(name=f"no_{rng.randrange(1000)}"), "", image_inputs(rng), ()), NOT_FOUND),
        "unknown version": (lambda rng: (spec(version=rng.randrange(50, 10**6)), "", image_inputs(rng), ()), NOT_FOUND),
        "unknown label": (lambda rng: (spec(version_label=f"label{rng.randrange(99)}"), "", image_inputs(rng), ()), INVALID),
        "unknown signature": (lambda rng: (spec(), f"sig_{rng.randrange(99)}", image_inputs(rng), ()), PRECONDITION),
        "wrong input name": (lambda rng: (spec(), "serving_default", {rng.choice(["image", "x", "image_bytes", "inputs"]): _images(rng)}, ()), INVALID),
        "extra input": (lambda rng: (spec(), "hash", {"images": _images(rng), "extra": _images(rng)}, ()), INVALID),
        "wrong dtype": (lambda rng: (spec(), rng.choice(["serving_default", "hash"]), {"images": rng.choice([
            (np.ones((1, 64, 64, 1), np.uint8)), np.ones((1, 64, 64, 1), np.int32),
            np.ones((1, 64, 64, 1), np.float64), np.array([b"x"], dtype=object)])}, ()), INVALID),
        "wrong shape": (lambda rng: (spec(), "serving_default", {"images": np.zeros(rng.choice([
            (1, 32, 32, 1), (1, 64, 64), (64, 64), (1, 64, 64, 3), (2, 64, 63, 1), (1,), ()]), np.float32)}, ()), INVALID),
        "bytes of wrong shape": (lambda rng: (spec(), "encode_images", {"image_bytes": np.array([[b"a", b"b"]], dtype=object)}, ()), INVALID),
        "empty batch": (lambda rng: (spec(), "serving_default", {"images": np.zeros((0, 64, 64, 1), np.float32)}, ()), INVALID),
        "out of range values": (lambda rng: (spec(), "hash", {"images": np.full((1, 64, 64, 1), rng.choice([5.0, -3.0, np.nan, np.inf]), np.float32)}, ()), INVALID),
        "undecodable image": (lambda rng: (spec(), rng.choice(["encode_images", "hash_images"]), {"image_bytes": np.array([rng.randbytes(rng.randrange(0, 200))], dtype=object)}, ()), INVALID),
        "unknown output filter": (lambda rng: (spec(), "hash", image_inputs(rng), (rng.choice(["embedding", "code", "x"]),)), INVALID),
        "huge dims": ("huge", INVALID),
        "truncated content": ("truncated", INVALID),
    }


def _raw_request(apis, tensor_class, case, rng, model):
    request = apis.predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = "serving_default"
    tensor = request.inputs["images"]
    tensor.dtype = 1
    if case == "huge":
        for size in (rng.choice([10**9, 2**40, 2**62]), 64, 64, 1):
            tensor.tensor_shape.dim.add(size=size)
    else:
        for size in (2, 64, 64, 1):
            tensor.tensor_shape.dim.add(size=size)
        tensor.tensor_content = b"\0" * rng.randrange(0, 2 * 64 * 64 * 4 - 1)
    return request


def _rest_cases(model):
    """name -> (build(rng) -> (path, body bytes), expected HTTP status)."""
    base = f"/v1/models/{model}"
    image = np.zeros((64, 64, 1)).tolist()
    return {
        "bad json": (lambda rng: (f"{base}:predict", rng.choice([b"{", b"[1,", b"nul", b"\xff\xfe", b""])), 400),
        "bad b64": (lambda rng: (f"{base}:predict", json.dumps({"signature_name": "encode_images", "instances": [{"b64": rng.choice(["@@@", "abc", "a=b="])}]}).encode()), 400),
        "undecodable image b64": (lambda rng: (f"{base}:predict", json.dumps({"signature_name": "encode_images", "instances": [{"b64": base64.b64encode(rng.randbytes(30)).decode()}]}).encode()), 400),
        "unknown model": (lambda rng: (f"/v1/models/nope{rng.randrange(99)}:predict", json.dumps({"instances": [image]}).encode()), 404),
        "unknown version": (lambda rng: (f"{base}/versions/{rng.randrange(50, 10**6)}:predict", json.dumps({"instances": [image]}).encode()), 404),
        "unknown label": (lambda rng: (f"{base}/labels/x{rng.randrange(99)}:predict", json.dumps({"instances": [image]}).encode()), 400),
        "unknown signature": (lambda rng: (f"{base}:predict", json.dumps({"signature_name": "nope", "instances": [image]}).encode()), 400),
        "wrong input name": (lambda rng: (f"{base}:predict", json.dumps({"inputs": {"image": [image]}}).encode()), 400),
        "string for float": (lambda rng: (f"{base}:predict", json.dumps({"instances": [rng.choice(["x", {"b64": "AAAA"}])]}).encode()), 400),
        "wrong shape": (lambda rng: (f"{base}:predict", json.dumps({"instances": rng.choice([[[1.0, 2.0]], [[[0.5]]], [1.0]])}).encode()), 400),
        "ragged": (lambda rng: (f"{base}:predict", json.dumps({"instances": [image, [[0.0]]]}).encode()), 400),
        "both formats": (lambda rng: (f"{base}:predict", json.dumps({"instances": [image], "inputs": [image]}).encode()), 400),
        "empty instances": (lambda rng: (f"{base}:predict", json.dumps({"instances": []}).encode()), 400),
        "not an object": (lambda rng: (f"{base}:predict", json.dumps(rng.choice([[1, 2], "x", 3])).encode()), 400),
    }


def _post(url, body, timeout=30):
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        payload = error.read()
        try:
            payload = json.loads(payload)
        except ValueError:
            payload = {"raw": payload[:100]}
        return error.code, payload


def run_fuzz(target, rest_url, model, reference_images, reference_embeddings, requests=2000,
             seed=0, valid_every=10):
    """Send `requests` malformed requests (half gRPC, half REST) with a valid one every
    `valid_every`; return {"counts": Counter, "mismatches": [...], "valid": n, "valid_failures": [...]}."""
    rng = random.Random(seed)
    client = EncoderClient(target, model, timeout=30, retries=0)
    apis = client._apis
    grpc_cases, rest_cases = _grpc_cases(model), _rest_cases(model)
    counts, mismatches, valid_failures, valid = Counter(), [], [], 0
    for index in range(requests):
        if index % valid_every == 0:
            pick = rng.randrange(len(reference_images))
            valid += 1
            try:
                embedding = client.encode(reference_images[pick:pick + 1])
                if not np.allclose(embedding[0], reference_embeddings[pick], atol=1e-5):
                    valid_failures.append(("grpc", "wrong embedding"))
                status, payload = _post(f"{rest_url}/v1/models/{model}:predict", json.dumps(
                    {"instances": reference_images[pick:pick + 1].tolist()}).encode())
                if status != 200 or not np.allclose(payload["predictions"][0],
                                                    reference_embeddings[pick], atol=1e-5):
                    valid_failures.append(("rest", status))
            except Exception as error:  # noqa: BLE001 - counted
                valid_failures.append(("grpc", repr(error)[:200]))
        if index % 2 == 0:
            name = rng.choice(sorted(grpc_cases))
            build, expected = grpc_cases[name]
            if isinstance(build, str):
                request = _raw_request(apis, client._tensor_class, build, rng, model)
            else:
                spec, signature, inputs, output_filter = build(rng)
                request = apis.predict_pb2.PredictRequest(output_filter=list(output_filter))
                request.model_spec.name = spec["name"]
                request.model_spec.signature_name = signature
                if "version" in spec:
                    request.model_spec.version.value = spec["version"]
                if "version_label" in spec:
                    request.model_spec.version_label = spec["version_label"]
                for alias, value in inputs.items():
                    request.inputs[alias].CopyFrom(to_tensor_proto(value, client._tensor_class))
            try:
                client._predict.Predict(request, timeout=30)
                got = grpc.StatusCode.OK
            except grpc.RpcError as error:
                got = error.code()
                message = error.details()
            counts[f"grpc {name}"] += 1
            if got != expected:
                mismatches.append((f"grpc {name}", expected.name, got.name,
                                   message if got != grpc.StatusCode.OK else ""))
        else:
            name = rng.choice(sorted(rest_cases))
            build, expected = rest_cases[name]
            path, body = build(rng)
            status, payload = _post(rest_url + path, body)
            counts[f"rest {name}"] += 1
            if status != expected or "error" not in payload:
                mismatches.append((f"rest {name}", expected, status, str(payload)[:200]))
    client.close()
    return {"counts": counts, "mismatches": mismatches, "valid": valid,
            "valid_failures": valid_failures}


def main(argv=None):
    from benchmarks.common import parser, start, test_images

    arguments = parser(__doc__)
    arguments.add_argument("--requests", type=int, default=2000)
    args = arguments.parse_args(argv)
    server, encoder, _ = start(args.kind, args.batching, args.model)
    try:
        images = test_images(16)
        started = time.monotonic()
        result = run_fuzz(server.target, server.rest_url, args.model, images,
                          encoder.encode(images), requests=args.requests)
        seconds = time.monotonic() - started
    finally:
        code = server.stop()
    print(f"{args.requests} malformed requests ({sum(1 for k in result['counts'] if k.startswith('grpc'))} gRPC "
          f"and {sum(1 for k in result['counts'] if k.startswith('rest'))} REST kinds) + "
          f"{result['valid']} valid ones in {seconds:.1f} s against the {args.kind} server "
          f"({args.model})")
    for name, count in sorted(result["counts"].items()):
        print(f"  {name:32s} {count:5d}")
    print(f"status mismatches: {len(result['mismatches'])}")
    for mismatch in result["mismatches"][:20]:
        print("  ", mismatch)
    print(f"valid requests failing: {len(result['valid_failures'])} of {result['valid']}")
    print(f"server exit code after SIGTERM: {code}")
    return 1 if result["mismatches"] or result["valid_failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
