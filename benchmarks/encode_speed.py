"""Encoding speed of the zoo's encoders: float32 against bfloat16 and int8, beside this CPU's
roofline.

    python -m benchmarks.encode_speed [--models NAME ...] [--retrieval] [--saved-model]
                                      [--tflite-int8]

Run it with nothing else on the machine. It prints:

1. the roofline: this CPU's measured peak of a large matrix product and of a 5x5 convolution
   in float32, bfloat16 and int8 (TensorFlow's oneDNN kernels; int8 is QuantizedConv2D);
2. for each model: multiply-adds an image (counted from its layers), in-process
   `Encoder.encode` images/s at batch 256 (best of --repeats over --count merchant marks) in
   float32, in bfloat16 (`zoo.load(name, precision="bfloat16")`) and, for the families with an
   int8 path (sketch-GAN+), in int8 (`precision="int8"`, zoo.quantization: the stride-2
   convolutions in int8, the rest in bfloat16), each path's ratio to float32, the GFLOP/s each
   reaches, and the fraction of the convolution peak of its precision (for int8: of the time
   its int8 convolutions would take at the int8 peak plus the rest at the bfloat16 one); the
   share of hash bits each path keeps equal to float32's on the timed images;
3. with --retrieval: P@8 on merchant_eval and omniglot_background of every path (the sketch-GAN+
   family's entries in RETRIEVAL), and the smallest cosine between each path's embedding and
   float32's;
4. with --saved-model: the exported SavedModel's serving_default called in-process, every
   precision (what a TensorFlow server with oneDNN runs);
5. with --tflite-int8: an int8 path the zoo does not ship, for comparison: the float32 feature
   extractor converted to a full-integer TensorFlow Lite model (int8 weights per channel, int8
   activations calibrated on 1,024 other merchant marks) and run by TensorFlow's bundled TFLite
   interpreter with XNNPACK on every core, at the same batch, timed in turns with the others.

A model's encoders are timed in turns, in one process.
"""

import argparse
import os
import tempfile
import time

import numpy as np
import tensorflow as tf

# The issue-16 set, and the encoder the README and every tool default to (zoo.registry's
# RECOMMENDED: the sketch-GAN+ network trained otherwise, so the same speed).
DEFAULT_MODELS = ("thin_gan_merchant", "sketch_gan_merchant", "bingan_fashion_32",
                  "sketch_gan_plus_merchant", "sketch_gan_plus_omniglot",
                  "sketch_neighbours_merchant")
RETRIEVAL = {"sketch_gan_plus_merchant": "merchant_eval",
             "sketch_gan_plus_omniglot": "omniglot_background",
             "sketch_neighbours_merchant": "merchant_eval"}
CALIBRATION_IMAGES = 1024  # merchant marks beyond the timed ones, for --tflite-int8's ranges


# ----------------------------------------------------------------------------- roofline


def _best_seconds(function, repeats=5):
    function()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def measure_peaks(size=2048, batch=256):
    """{"matmul" | "conv": {precision: G(FL)OP/s}}: a size^3 product, and a 5x5 stride-2
    convolution of [batch, 32, 32, 32] to 64 channels (sketch-GAN+'s middle block)."""
    rng = np.random.default_rng(0)
    peaks = {"matmul": {}, "conv": {}}
    conv_ops = 2 * batch * 16 * 16 * 25 * 32 * 64
    for precision, dtype in (("float32", tf.float32), ("bfloat16", tf.bfloat16)):
        a = tf.cast(rng.standard_normal((size, size), np.float32), dtype)
        matmul = tf.function(lambda a=a: tf.matmul(a, a))
        peaks["matmul"][precision] = 2 * size ** 3 / _best_seconds(lambda: matmul().numpy()) / 1e9
        x = tf.cast(rng.random((batch, 32, 32, 32), np.float32), dtype)
        w = tf.cast(rng.standard_normal((5, 5, 32, 64), np.float32), dtype)
        conv = tf.function(lambda x=x, w=w: tf.nn.conv2d(x, w, 2, "SAME"))
        peaks["conv"][precision] = conv_ops / _best_seconds(lambda: conv().numpy()) / 1e9
    x8 = tf.constant(rng.integers(0, 255, (batch, 32, 32, 32), dtype=np.uint8), tf.quint8)
    w8 = rng.integers(-127, 127, (5, 5, 32, 64), dtype=np.int8)

    @tf.function
    def conv_int8():
        return tf.raw_ops.QuantizedConv2D(  # oneDNN wants the filter as a graph constant
            input=x8, filter=tf.constant(w8, tf.qint8), min_input=0.0, max_input=1.0,
            min_filter=-1.0, max_filter=1.0, strides=[1, 2, 2, 1], padding="SAME")[0]

    try:
        peaks["conv"]["int8"] = conv_ops / _best_seconds(lambda: conv_int8().numpy()) / 1e9
    except tf.errors.OpError as error:  # a TensorFlow build without quantized oneDNN kernels
        print(f"(int8 convolution not measured: {str(error).splitlines()[0]})")
    return peaks


def multiply_adds(model, int8_only=False):
    """Multiply-adds of one image through `model`'s layers with a kernel: convolutions
    (a 4-d kernel, once per output position) and dense layers (2-d), BinGAN's weight-normalised
    ones and the int8 path's quantised convolutions included (only those with `int8_only`). The
    rest is elementwise or pooling: under 1% for the zoo's encoders."""
    total = 0
    for layer in model.layers:
        kernel = getattr(layer, "kernel8", None)  # zoo.quantization.QuantizedConvLeakyReLU
        if kernel is None and not int8_only:
            kernel = getattr(layer, "kernel", None)
        if kernel is None:
            continue
        if len(kernel.shape) == 4:
            _, height, width, _ = layer.output.shape
            total += height * width * int(np.prod(kernel.shape))
        elif len(kernel.shape) == 2:
            total += int(np.prod(kernel.shape))
    return int(total)


def int8_roofline(model, peaks):
    """Images/s of `model` (an int8 path) if its int8 convolutions ran at the int8 convolution
    peak and the rest at the bfloat16 one: the int8 path's limit on this CPU."""
    int8 = multiply_adds(model, int8_only=True)
    seconds = (2 * int8 / peaks["conv"]["int8"]
               + 2 * (multiply_adds(model) - int8) / peaks["conv"]["bfloat16"]) / 1e9
    return 1 / seconds


# ----------------------------------------------------------------------------- encoders


def _images(count, size):
    from zoo.data.merchant_marks import make_corpus

    images = np.asarray(make_corpus(count // 4 + 1, 4, seed=0).images[:count], np.float32)
    images = images.reshape(count, images.shape[1], images.shape[2], 1)
    if size != images.shape[1]:  # BinGAN's 32 x 32 input
        images = np.clip(tf.image.resize(images, (size, size), antialias=True).numpy(), 0, 1)
    return images


def encode_rates(encoders, images, repeats):
    """{key: images/s of encoder.encode(images) at batch 256}, best of `repeats`, taking turns."""
    for encoder in encoders.values():
        encoder.encode(images[:512])  # trace
    best = {key: float("inf") for key in encoders}
    for _ in range(repeats):
        for key, encoder in encoders.items():
            started = time.perf_counter()
            encoder.encode(images, batch_size=256)
            best[key] = min(best[key], time.perf_counter() - started)
    return {key: len(images) / seconds for key, seconds in best.items()}


def saved_model_rates(encoders, images, repeats):
    """{key: images/s} of each encoder exported and reloaded, serving_default at batch 256."""
    functions = {}
    with tempfile.TemporaryDirectory(prefix="encode-speed-") as base:
        for key, encoder in encoders.items():
            path = encoder.export(os.path.join(base, key), 1)
            functions[key] = tf.saved_model.load(path).signatures["serving_default"]
        batches = [tf.constant(images[start:start + 256]) for start in range(0, len(images), 256)]
        best = {key: float("inf") for key in functions}
        for key, function in functions.items():
            function(images=batches[0])
        for _ in range(repeats):
            for key, function in functions.items():
                started = time.perf_counter()
                for batch in batches:
                    function(images=batch)["embedding"].numpy()
                best[key] = min(best[key], time.perf_counter() - started)
    return {key: len(images) / seconds for key, seconds in best.items()}


class TFLiteInt8Encoder:
    """`encoder`'s float32 feature extractor as a full-integer TFLite model: `encode(images)`
    gives L2-normalised float32 embeddings as `Encoder.encode` does. Batches are fixed at
    `batch_size` (the last one padded). For this benchmark only: TensorFlow's tf.lite
    interpreter is deprecated (its successor is the ai-edge-litert package), and TF Serving
    does not serve TFLite models."""

    def __init__(self, encoder, calibration, batch_size=256):
        size = encoder.image_size
        spec = tf.TensorSpec([batch_size, size, size, 1], tf.float32)
        extractor = encoder.feature_extractor
        function = tf.function(lambda images: extractor(images, training=False),
                               input_signature=[spec])
        converter = tf.lite.TFLiteConverter.from_concrete_functions(
            [function.get_concrete_function()], function)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.float32
        starts = range(0, len(calibration) - batch_size + 1, batch_size)
        converter.representative_dataset = lambda: (
            [calibration[start:start + batch_size]] for start in starts)
        self.model_bytes = converter.convert()
        self._interpreter = tf.lite.Interpreter(model_content=self.model_bytes,
                                                num_threads=os.cpu_count())
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self.batch_size = batch_size

    def encode(self, images, batch_size=None):
        del batch_size  # fixed when converted
        images = np.asarray(images, np.float32)
        if images.ndim == 3:
            images = images[..., None]
        padding = -len(images) % self.batch_size
        if padding:
            images = np.concatenate([images, np.zeros((padding, *images.shape[1:]), np.float32)])
        outputs = []
        for start in range(0, len(images), self.batch_size):
            self._interpreter.set_tensor(self._input, images[start:start + self.batch_size])
            self._interpreter.invoke()
            outputs.append(self._interpreter.get_tensor(self._output))
        features = np.concatenate(outputs)[:len(images) - padding]
        return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def equal_hash_bits(encoders, images):
    """{key: fraction of the float32 encoder's hash bits that each other path's embeddings
    give too, through the same hash head} on `images`."""
    head = encoders["float32"].hash_head
    bits = {key: head.bits(encoder.encode(images)) for key, encoder in encoders.items()}
    return {key: float(np.mean(value == bits["float32"]))
            for key, value in bits.items() if key != "float32"}


def retrieval(encoders, corpus_name):
    """({key: {"P@8", "R@1"}} on the corpus, {key: the smallest cosine between its embedding
    and the float32 one of the same image} for the other paths)."""
    from zoo.data.corpora import load_corpus
    from zoo.apps.evaluation.retrieval import retrieval_metrics
    from zoo.registry import get_corpus

    corpus = load_corpus(get_corpus(corpus_name))
    embeddings = {key: encoder.encode(corpus.images) for key, encoder in encoders.items()}
    scores = {}
    for key, value in embeddings.items():
        metrics = retrieval_metrics(value, corpus.labels, k=8)
        scores[key] = {"P@8": metrics["P@8"], "R@1": metrics["R@1"]}
    return scores, {key: float(np.sum(embeddings["float32"] * value, axis=1).min())
                    for key, value in embeddings.items() if key != "float32"}


def _int8_path(name):
    """Whether registered model `name` has precision="int8" on this TensorFlow."""
    from zoo.loading import has_int8_encoder
    from zoo.quantization import int8_available

    return has_int8_encoder(name) and int8_available()


def main(argv=None):
    from zoo.apps.evaluation.speed import command_line
    from zoo.loading import load
    from zoo.machine import machine_description
    from zoo.precision import native_bfloat16, native_int8

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--count", type=int, default=4000, help="merchant marks encoded")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--retrieval", action="store_true",
                        help="P@8 of every path for the sketch-GAN+ entries")
    parser.add_argument("--saved-model", action="store_true",
                        help="also time the exported SavedModels")
    parser.add_argument("--tflite-int8", action="store_true",
                        help="also time a full-integer TFLite conversion of each model (not "
                             "shipped; see the docstring)")
    parser.add_argument("--record", action="store_true",
                        help="keep the results as the speed report encode "
                             "(reports/results/speed.json; MODELS.md, Speed)")
    args = parser.parse_args(argv)

    command = command_line("benchmarks.encode_speed", argv)
    print(f"machine: {machine_description()}; native bfloat16: {native_bfloat16()}; native "
          f"int8: {native_int8()}")
    print(f"command: {command}")
    peaks = measure_peaks()
    print("\nroofline (measured peaks, G(FL)OP/s):")
    for kind, values in peaks.items():
        print(f"  {kind:7s} " + "  ".join(f"{p} {v:6.0f}" for p, v in values.items()))
    results = {"peaks": peaks, "models": {}, "batch_size": 256, "images": args.count}
    print(f"\n{'model':26s} {'MMAC/img':>8s} {'f32 img/s':>10s} {'bf16 img/s':>10s} "
          f"{'bf16/f32':>8s} {'int8 img/s':>10s} {'int8/f32':>8s} {'f32 GFLOP/s':>11s} "
          f"{'bf16 GFLOP/s':>12s} {'f32 %peak':>9s} {'bf16 %peak':>10s}")
    for name in args.models:
        precisions = ("float32", "bfloat16") + (("int8",) if _int8_path(name) else ())
        encoders = {precision: load(name, precision=precision) for precision in precisions}
        macs = multiply_adds(encoders["float32"].feature_extractor)
        size = encoders["float32"].image_size
        images = _images(args.count, size)
        if args.tflite_int8:
            calibration = _images(args.count + CALIBRATION_IMAGES, size)[args.count:]
            try:
                encoders["tflite_int8"] = TFLiteInt8Encoder(encoders["float32"], calibration)
            except Exception as error:  # noqa: BLE001 - a layer TFLite cannot quantize
                print(f"(TFLite int8 not measured for {name}: {str(error).splitlines()[0]})")
        rates = encode_rates(encoders, images, args.repeats)
        gflops = {key: 2 * macs * rate / 1e9 for key, rate in rates.items()}
        record = {"multiply_adds": macs, "images_per_s": rates, "gflops": gflops,
                  "speedup": rates["bfloat16"] / rates["float32"],
                  "equal_hash_bits": equal_hash_bits(encoders, images)}
        for key in ("int8", "tflite_int8"):
            if key in rates:
                record[f"{key}_speedup"] = rates[key] / rates["float32"]
        if "int8" in rates and "int8" in peaks["conv"]:
            record["int8_roofline_fraction"] = rates["int8"] / int8_roofline(
                encoders["int8"].feature_extractor, peaks)
        int8 = (f"{rates['int8']:10.0f} {record['int8_speedup']:8.2f}" if "int8" in rates
                else f"{'-':>10s} {'-':>8s}")
        print(f"{name:26s} {macs / 1e6:8.1f} {rates['float32']:10.0f} {rates['bfloat16']:10.0f} "
              f"{record['speedup']:8.2f} {int8} {gflops['float32']:11.0f} "
              f"{gflops['bfloat16']:12.0f} "
              f"{gflops['float32'] / peaks['conv']['float32']:9.0%} "
              f"{gflops['bfloat16'] / peaks['conv']['bfloat16']:10.0%}")
        if "int8_roofline_fraction" in record:
            print(f"{'':26s} int8 path at {record['int8_roofline_fraction']:.0%} of its roofline "
                  "(int8 convolutions at the int8 conv peak, the rest at the bfloat16 one)")
        print(f"{'':26s} hash bits equal to float32's: " + ", ".join(
            f"{key} {value:.2%}" for key, value in record["equal_hash_bits"].items()))
        if "tflite_int8" in rates:
            print(f"{'':26s} TFLite int8 (not shipped) {rates['tflite_int8']:.0f} img/s, "
                  f"{record['tflite_int8_speedup']:.2f}x float32")
        if args.saved_model:
            record["saved_model_images_per_s"] = saved_model_rates(
                {key: encoders[key] for key in precisions}, images, args.repeats)
        if args.retrieval and name in RETRIEVAL:
            record["retrieval"] = dict(zip(("scores", "min_cosine"),
                                           retrieval(encoders, RETRIEVAL[name])),
                                       corpus=RETRIEVAL[name])
        results["models"][name] = record
    for name, record in results["models"].items():
        if "saved_model_images_per_s" in record:
            rates = record["saved_model_images_per_s"]
            print(f"{name}: SavedModel serving_default " + ", ".join(
                f"{key} {rate:.0f} img/s" + (f" ({rate / rates['float32']:.2f}x)"
                                              if key != "float32" else "")
                for key, rate in rates.items()))
        if "retrieval" in record:
            scores = record["retrieval"]["scores"]
            cosines = record["retrieval"]["min_cosine"]
            print(f"{name} on {record['retrieval']['corpus']}: " + "; ".join(
                f"{key} P@8 {value['P@8']:.3f} R@1 {value['R@1']:.3f}"
                for key, value in scores.items())
                + "; smallest cosine with float32: " + ", ".join(
                    f"{key} {value:.5f}" for key, value in cosines.items()))
    if args.record:
        from zoo.apps.evaluation.speed import record

        print(f"recorded: {record('encode', results, command)}")


if __name__ == "__main__":
    main()
