"""Probe for issue 14 (learned codes for the archive encoders): a linear K-bit code head on the
frozen embeddings of a shipped encoder, trained without labels, against the ITQ head it ships.

    python -m benchmarks.code_head_probe sketch_gan_plus_merchant sketch_gan_plus_omniglot

The head keeps the shipped head's form (bits = sign((e - mean) @ W), so export, serving and the
index could use it unchanged) and starts from the ITQ projection. It is trained on the model's
training corpus: each image is augmented `--views` times (sketch-GAN+'s own augmentation:
rotation, scale, shift, stroke width) and encoded by the frozen encoder once; a step takes two
random views of a batch of images, relaxes their codes (tanh of the standardised projections)
and minimises NT-Xent between the two views' relaxed codes plus BinGAN's BRE term (balanced,
decorrelated bits), optionally DMR (relaxed code inner products mimic the embedding's cosine).
It prints P@8 on the model's evaluation corpus for the float embedding, the shipped ITQ codes
and the learned codes, all in this run, seeds fixed. A probe: nothing is written or shipped.
"""

import argparse
import time

import numpy as np


def train_head(embeddings, views, head, steps, temperature, bre, dmr, batch=256, seed=0,
               learning_rate=3e-4):
    """The learned projection float32 [D, K], from the ITQ head `head` (a LinearHash)."""
    import tensorflow as tf

    from zoo.training.sketch_gan_plus import nt_xent

    mean = tf.constant(head.mean, tf.float32)
    projection = tf.Variable(head.projection.astype(np.float32))
    bits = projection.shape[1]
    scale = tf.constant(np.std((embeddings - head.mean) @ head.projection, axis=0,
                               keepdims=True).astype(np.float32))
    optimizer = tf.keras.optimizers.Adam(learning_rate)
    rng = np.random.default_rng(seed)

    def relaxed(x):
        return tf.tanh((x - mean) @ projection / scale)

    for _ in range(steps):
        rows = rng.choice(len(views), batch, replace=False)
        first = tf.constant(views[rows, rng.integers(0, views.shape[1], batch)])
        second = tf.constant(views[rows, rng.integers(0, views.shape[1], batch)])
        plain = tf.constant(embeddings[rows])
        with tf.GradientTape() as tape:
            codes = tf.concat([relaxed(first), relaxed(second)], 0)
            loss = nt_xent(codes[:batch], codes[batch:], temperature)
            balance = tf.reduce_mean(tf.square(tf.reduce_mean(codes, 0)))
            correlation = tf.linalg.set_diag(tf.transpose(codes) @ codes / (2 * batch),
                                             tf.zeros(bits))
            loss += bre * (balance + tf.reduce_mean(tf.square(correlation)))
            if dmr:
                code = relaxed(plain)
                loss += dmr * tf.reduce_mean(tf.square(code @ tf.transpose(code) / bits
                                                       - plain @ tf.transpose(plain)))
        optimizer.apply_gradients(zip(tape.gradient(loss, [projection]), [projection]))
    return projection.numpy()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=0.2)
    parser.add_argument("--bre", type=float, default=1.0)
    parser.add_argument("--dmr", type=float, nargs="+", default=[0.0, 1.0],
                        help="DMR weights to try, one row each")
    args = parser.parse_args(argv)

    import tensorflow as tf

    import zoo
    from zoo.data.corpora import load_corpus
    from zoo.evaluation.retrieval import retrieval_metrics
    from zoo.machine import machine_description
    from zoo.registry import get_corpus
    from zoo.training.sketch_gan_plus import augment

    print(f"machine: {machine_description()}")
    for name in args.models:
        encoder = zoo.load(name)
        train = load_corpus(get_corpus(encoder.entry.corpus))
        evaluation = load_corpus(get_corpus(encoder.entry.eval_corpus))
        started = time.perf_counter()
        embeddings = encoder.encode(train.images)
        views = np.stack([encoder.encode(augment(tf.constant(train.images),
                                                 tf.constant([view, 7])).numpy())
                          for view in range(args.views)], axis=1)
        evaluated = encoder.encode(evaluation.images)
        head = encoder.hash_head

        def p_at_8(codes):
            return retrieval_metrics(codes.astype(np.float32) * 2 - 1, evaluation.labels,
                                     k=8)["P@8"]

        print(f"\n{name}: trained on {encoder.entry.corpus} ({len(train.images)} images x "
              f"{args.views} views), P@8 on {encoder.entry.eval_corpus}")
        float_p8 = retrieval_metrics(evaluated, evaluation.labels, k=8)["P@8"]
        print(f"  float embedding                 {float_p8:.3f}")
        print(f"  {head.num_bits}-bit ITQ head (shipped)       "
              f"{p_at_8(head.bits(evaluated)):.3f}")
        for dmr in args.dmr:
            projection = train_head(embeddings, views, head, args.steps, args.temperature,
                                    args.bre, dmr)
            bits = ((evaluated - head.mean) @ projection > 0).astype(np.uint8)
            print(f"  learned head, NT-Xent {args.temperature:g} + BRE {args.bre:g} + DMR "
                  f"{dmr:g}: {p_at_8(bits):.3f}  ({args.steps} steps)", flush=True)
        print(f"  ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
