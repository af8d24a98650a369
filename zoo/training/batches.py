"""How a training step's batch is drawn: a seeded sample of the corpus, and partners for the
second view (the image itself, or one of its nearest neighbours in the corpus, no labels).

Every draw depends only on a stateless seed built from (recipe seed, step), so a resumed run sees
the batches an uninterrupted one would have. Used by the generic GAN loop
(zoo.training.train.batch_dataset), BinGAN+ (pixel neighbours) and sketch-GAN+ (embedding
neighbours).
"""

import tensorflow as tf


def seeded_sample(count, batch_size, seed):
    """int32 [batch_size]: indices drawn without replacement from range(count) by the stateless
    seed [2]."""
    return tf.argsort(tf.random.stateless_uniform([count], seed=seed))[:batch_size]


def neighbour_partners(neighbours, index, seeds, share):
    """int32 like `index`: each index itself or, with probability `share`, one of its
    neighbours (a uniformly drawn column of `neighbours` [N, k]); `seeds` [2, 2] stateless seeds
    for the column and the choice."""
    count = tf.shape(index)[0]
    pick = tf.random.stateless_uniform([count], seeds[0], 0, tf.shape(neighbours)[1],
                                       dtype=tf.int32)
    use = tf.random.stateless_uniform([count], seeds[1]) < share
    return tf.where(use, tf.gather(tf.gather(neighbours, index), pick, batch_dims=1), index)


def step_dataset(sample, first_step, last_step):
    """tf.data of sample(step) for steps [first_step, last_step), mapped in parallel."""
    steps = tf.data.Dataset.range(first_step, last_step)
    return steps.map(sample, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)

