"""Where a training step's time goes, and what the zoo's changes gain, measured side by side.

    python -m benchmarks.training_speed [--model sketch_gan_plus_merchant] [--batch-size 128]
                                        [--steps 5] [--rounds 3] [--profile] [--record]

Variants of one model's training step (the registered recipe's `train_step`, compiled as
`zoo train` compiles it), timed in turns in one process with the same batch:

- float32 / mixed_bfloat16: the compute precision (recipes train in mixed_bfloat16);
- plain Conv2D / space-to-depth: the generator's last layer as the Keras Conv2D it was
  before issue 16, or as zoo.models.sketch_gan.SpaceToDepthConv2D (same kernel, same outputs);
- MaxPool op / max_pool_3x3: the stroke-width augmentation's 3x3 maximum as TensorFlow's
  max_pool2d and its MaxPoolGrad, or as zoo.training.sketch_gan_plus.max_pool_3x3 (the same
  values and gradient routing; trainers with that augmentation only);
- autodiff / space-to-depth: the discriminator's first layer's input gradient (the generator's
  path) as TensorFlow's Conv2DBackpropInput, or computed on space-to-depth blocks
  (zoo.models.sketch_gan.SpaceToDepthInputGradientConv2D; models with that layer only).

It prints seconds a step and the speed-up of each variant over float32 with the plain layer,
the MaxPool op and autodiff's input gradient (the zoo's loop before issue 16); the last
mixed_bfloat16 row is the zoo's loop now, the last row the same in float32.
--profile adds TensorFlow's profiler op table of one step per variant: self time by op type
and the slowest ops (which oneDNN kernels ran).
"""

import argparse
import glob
import json
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf


def plain_generator(generator):
    """`generator` with every SpaceToDepthConv2D replaced by the Keras Conv2D it computes (the
    same weights), the layer the zoo used before."""
    from zoo.models.sketch_gan import SpaceToDepthConv2D

    def clone(layer):
        if isinstance(layer, SpaceToDepthConv2D):
            config = layer.get_config()
            config.pop("block")
            return keras.layers.Conv2D.from_config(config)
        return layer.__class__.from_config(layer.get_config())

    plain = keras.models.clone_model(generator, clone_function=clone)
    plain.set_weights(generator.get_weights())
    return plain


# (precision, generator's last layer, stroke 3x3 maximum, D's first-layer input gradient)
BASELINE = ("float32", "plain Conv2D", "MaxPool op", "autodiff")
VARIANTS = (BASELINE,
            ("mixed_bfloat16", "plain Conv2D", "MaxPool op", "autodiff"),
            ("mixed_bfloat16", "space-to-depth", "MaxPool op", "autodiff"),
            ("mixed_bfloat16", "space-to-depth", "max_pool_3x3", "autodiff"),
            ("mixed_bfloat16", "space-to-depth", "max_pool_3x3", "space-to-depth"),
            ("float32", "space-to-depth", "max_pool_3x3", "space-to-depth"))


def make_steps(name, batch_size):
    """{variant (a VARIANTS tuple): compiled train step} for `name`'s recipe, and a real
    batch. Models without the stroke augmentation or the blocked first layer get the variants
    that do not need them."""
    from zoo.loading import build
    from zoo.models import get_family
    from zoo.precision import policy_scope
    from zoo.registry import get_entry
    from zoo.models.sketch_gan import SpaceToDepthInputGradientConv2D
    from zoo.training.sketch_gan_plus import reference_max_pool_3x3

    entry = get_entry(name)
    recipe = entry.recipe.replace(batch_size=batch_size)
    family = get_family(entry.family)
    wrapper = family.training_wrapper()
    size = family.image_size
    images = (np.random.default_rng(0).random((batch_size, size, size, 1)) > 0.9).astype(
        np.float32)
    steps = {}
    for precision, layer, pool, first_layer in VARIANTS:
        with policy_scope(precision):
            generator, discriminator = build(name)
            if layer == "plain Conv2D":
                generator = plain_generator(generator)
        blocked = [each for each in discriminator.layers
                   if isinstance(each, SpaceToDepthInputGradientConv2D)]
        if first_layer == "autodiff":
            for each in blocked:
                each.input_gradient_by_blocks = False
        elif not blocked:
            continue
        trainer = wrapper.make_trainer(generator, discriminator, recipe)
        if not hasattr(trainer, "stroke_max_pool"):
            if pool != "MaxPool op":
                continue
        elif pool == "MaxPool op":
            trainer.stroke_max_pool = reference_max_pool_3x3
        steps[precision, layer, pool, first_layer] = tf.function(trainer.train_step)
    return steps, tf.constant(images)


def time_steps(steps, batch, count, rounds):
    """{key: median seconds a step} over `rounds` turns of `count` steps each."""
    for step in steps.values():
        for _ in range(2):
            _finish(step(batch))  # trace and warm up
    timings = {key: [] for key in steps}
    for _ in range(rounds):
        for key, step in steps.items():
            started = time.perf_counter()
            for _ in range(count):
                _finish(step(batch))
            timings[key].append((time.perf_counter() - started) / count)
    return {key: float(np.median(values)) for key, values in timings.items()}


def _finish(outputs):
    for value in tf.nest.flatten(outputs):
        value.numpy()


def op_profile(step, batch, top=8):
    """TensorFlow's framework op stats of one step: (total self ms, [(op type, self ms)],
    [(op, type, self ms)] of the slowest ops)."""
    from tensorflow.python.profiler.internal import _pywrap_profiler_plugin as plugin

    with tempfile.TemporaryDirectory(prefix="training-profile-") as logdir:
        tf.profiler.experimental.start(logdir)
        _finish(step(batch))
        tf.profiler.experimental.stop()
        (path,) = glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)
        data, _ = plugin.xspace_to_tools_data([path], "framework_op_stats", {})
    table = json.loads(data)[0]
    columns = [column["id"] for column in table["cols"]]
    rows = [dict(zip(columns, [cell.get("v") if cell else None for cell in row["c"]]))
            for row in table["rows"]]
    by_type = {}
    for row in rows:
        by_type[row["type"]] = by_type.get(row["type"], 0.0) + row["total_self_time"] / 1e3
    slowest = sorted(rows, key=lambda row: -row["total_self_time"])[:top]
    return (sum(by_type.values()), sorted(by_type.items(), key=lambda item: -item[1])[:top],
            [(row["operation"], row["type"], row["total_self_time"] / 1e3) for row in slowest])


def main(argv=None):
    from zoo.apps.evaluation.speed import command_line
    from zoo.machine import machine_description

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sketch_gan_plus_merchant")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="steps a turn")
    parser.add_argument("--rounds", type=int, default=3, help="turns of each variant")
    parser.add_argument("--profile", action="store_true", help="print the op profile")
    parser.add_argument("--record", action="store_true",
                        help="keep the results as the speed report training "
                             "(reports/results/speed.json)")
    args = parser.parse_args(argv)
    command = command_line("benchmarks.training_speed", argv)
    print(f"machine: {machine_description()}\ncommand: {command}")
    steps, batch = make_steps(args.model, args.batch_size)
    seconds = time_steps(steps, batch, args.steps, args.rounds)
    baseline = seconds[BASELINE]
    print(f"\n{args.model}, batch {args.batch_size}, median of {args.rounds} turns of "
          f"{args.steps} steps:")
    print(f"  {'precision':15s} {'generator last layer':21s} {'stroke 3x3 max':15s} "
          f"{'D first-layer input grad':25s} {'s/step':>7s} {'speed-up':>9s}")
    for (precision, layer, pool, first_layer), value in seconds.items():
        print(f"  {precision:15s} {layer:21s} {pool:15s} {first_layer:25s} {value:7.3f} "
              f"{baseline / value:8.2f}x")
    result = {"model": args.model, "batch_size": args.batch_size,
              "s_per_step": {", ".join(key): value for key, value in seconds.items()},
              "baseline": ", ".join(BASELINE)}
    if args.profile:
        result["profile"] = {}
        for key, step in steps.items():
            total, by_type, slowest = op_profile(step, batch)
            result["profile"][", ".join(key)] = {
                "self_ms": total, "by_type": by_type, "slowest": slowest}
            print(f"\nprofile, {', '.join(key)}: {total:.0f} ms of op self time in one "
                  f"step (both cores together); by op type:")
            for kind, ms in by_type:
                print(f"  {kind:40s} {ms:7.1f} ms {ms / total:6.1%}")
            print("  slowest ops:")
            for operation, kind, ms in slowest:
                print(f"  {ms:7.1f} ms  {kind:32s} {operation[-80:]}")
    if args.record:
        from zoo.apps.evaluation import speed

        print(f"recorded: {speed.record('training', result, command)}")


if __name__ == "__main__":
    main()
