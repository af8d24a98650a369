"""Learned K-bit code heads for the float encoders (issue 14, part 3): BinGAN's regularisers on a
linear binary layer over a frozen encoder, trained without labels.

The head keeps the form every float encoder's hash head has (`zoo.hashing.LinearHash`):

    bits(e) = [(e - mean) @ W >= 0]        e: the L2-normalised embedding [D], W: [D, K]

so `Encoder.hash`, the exported `hash` / `hash_images` signatures, the index's Hamming mode, the
web page and Beam use a learned head exactly as they use an ITQ head. It starts from the ITQ
projection fitted on the same embeddings and is trained on relaxed codes

    b(e) = tanh((e - mean) @ W / s)        s: each ITQ projection's std on the corpus (fixed)

with, on a batch of B corpus images each seen in two random augmented views (the encoder's own
training augmentation, encoded once per view before training, the encoder frozen):

* contrastive: NT-Xent between the two views' relaxed codes (the task sketch-GAN+ gives its
  discriminator, here asked of the code);
* BRE (BinGAN's bit regulariser, squared form): ME = mean over bits of (batch mean of b)^2 plus
  the mean square of the off-diagonal bit correlations b^T b / 2B (balanced, decorrelated bits);
* DMR (BinGAN's distance matching, optional): mean over pairs of (b_i.b_j / K - e_i.e_j)^2,
  the code's inner products mimicking the embedding's cosines;
* distillation (optional): cross-entropy between each image's neighbour distribution under the
  embedding (softmax over the batch of e_i.e_j / tau) and under the code (of the cosine of the
  relaxed codes / tau), which asks the code to keep the embedding's *nearest* neighbours rather
  than all its distances.

Everything here is unsupervised: the corpus labels never reach it.
"""

import numpy as np

from zoo.hashing import LinearHash, fit_itq
from zoo.recipes import CodeHeadRecipe  # noqa: F401  (re-exported)

HASH_BITS = 64  # default code length of a float encoder's head


# ----------------------------------------------------------------------------- losses


def bit_regulariser(codes):
    """BRE, squared form: (ME, AC) with ME = mean over bits of (batch mean)^2 and AC = mean square
    of the off-diagonal entries of codes^T codes / N. Zero for balanced, uncorrelated bits."""
    import tensorflow as tf

    codes = tf.convert_to_tensor(codes, tf.float32)
    count = tf.cast(tf.shape(codes)[0], tf.float32)
    bits = tf.shape(codes)[1]
    marginal = tf.reduce_mean(tf.square(tf.reduce_mean(codes, 0)))
    correlation = tf.linalg.set_diag(tf.matmul(codes, codes, transpose_a=True) / count,
                                     tf.zeros([bits]))
    return marginal, tf.reduce_mean(tf.square(correlation))


def distance_matching(codes, embeddings):
    """DMR, squared form: mean over all pairs of (codes_i.codes_j / K - e_i.e_j)^2."""
    import tensorflow as tf

    codes = tf.convert_to_tensor(codes, tf.float32)
    bits = tf.cast(tf.shape(codes)[1], tf.float32)
    code_inner = tf.matmul(codes, codes, transpose_b=True) / bits
    embedding_inner = tf.matmul(embeddings, embeddings, transpose_b=True)
    return tf.reduce_mean(tf.square(code_inner - embedding_inner))


def neighbour_distillation(codes, embeddings, temperature):
    """Mean over images of the cross-entropy between the neighbour distribution of the embedding
    (softmax over j != i of e_i.e_j / temperature) and the code's (same, cosines of codes)."""
    import tensorflow as tf

    codes = tf.math.l2_normalize(tf.convert_to_tensor(codes, tf.float32), axis=1)
    embeddings = tf.math.l2_normalize(tf.convert_to_tensor(embeddings, tf.float32), axis=1)
    count = tf.shape(codes)[0]
    mask = 1e9 * tf.eye(count)  # an image is not its own neighbour
    target = tf.nn.softmax(tf.matmul(embeddings, embeddings, transpose_b=True) / temperature
                           - mask)
    logits = tf.matmul(codes, codes, transpose_b=True) / temperature - mask
    return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=target, logits=logits))


# ----------------------------------------------------------------------------- training


def encode_views(encoder, images, views, seed=0, augment=None, progress=False):
    """float32 [N, views, D]: the encoder's embeddings of `views` augmented copies of `images`
    (default augmentation: sketch-GAN+'s rotation, scale, shift and stroke width)."""
    import tensorflow as tf
    from tqdm.auto import tqdm

    if augment is None:
        from zoo.training.sketch_gan_plus import augment
    images = tf.constant(np.asarray(images, np.float32))
    return np.stack([encoder.encode(augment(images, tf.constant([seed, view])).numpy())
                     for view in tqdm(range(views), desc="encoding views", disable=not progress)],
                    axis=1)


def train_code_head(embeddings, views, recipe, progress=False, log=None):
    """A learned LinearHash from `embeddings` float32 [N, D] (L2-normalised, unaugmented) and
    `views` float32 [N, V, D] (the same images' augmented views), following `recipe`.

    `log(step, losses)` is called every 100 steps when given.
    """
    import tensorflow as tf
    from tqdm.auto import trange

    from zoo.training.sketch_gan_plus import nt_xent

    embeddings = np.asarray(embeddings, np.float32)
    views = np.asarray(views, np.float32)
    if views.ndim != 3 or views.shape[0] != len(embeddings) or views.shape[2] != embeddings.shape[1]:
        raise ValueError(f"Expected views [N, V, D] matching embeddings {embeddings.shape}; got "
                         f"{views.shape}.")
    if views.shape[1] < 2 and recipe.lambda_contrastive:
        raise ValueError(f"The contrastive term needs at least 2 views an image; got "
                         f"{views.shape[1]}.")
    batch = min(recipe.batch_size, len(embeddings))
    itq = fit_itq(embeddings, recipe.bits, seed=recipe.seed)
    mean = tf.constant(itq.mean)
    scale = tf.constant(np.maximum(itq.project(embeddings).std(axis=0, keepdims=True), 1e-6))
    projection = tf.Variable(itq.projection)
    optimizer = tf.keras.optimizers.Adam(recipe.learning_rate)
    rng = np.random.default_rng(recipe.seed)

    def relaxed(x):
        return tf.tanh(tf.matmul(x - mean, projection) / scale)

    @tf.function
    def step(first, second, plain):
        with tf.GradientTape() as tape:
            codes = relaxed(tf.concat([first, second], 0))
            losses = {"contrastive": nt_xent(codes[:batch], codes[batch:], recipe.temperature)}
            marginal, correlation = bit_regulariser(codes)
            losses["bre"] = marginal + correlation
            if recipe.lambda_dmr or recipe.lambda_distill:
                code = relaxed(plain)
            if recipe.lambda_dmr:
                losses["dmr"] = distance_matching(code, plain)
            if recipe.lambda_distill:
                losses["distill"] = neighbour_distillation(code, plain,
                                                           recipe.distill_temperature)
            total = (recipe.lambda_contrastive * losses["contrastive"]
                     + recipe.lambda_bre * losses["bre"]
                     + recipe.lambda_dmr * losses.get("dmr", 0.0)
                     + recipe.lambda_distill * losses.get("distill", 0.0))
        optimizer.apply_gradients([(tape.gradient(total, projection), projection)])
        return {"loss": total, **losses}

    for index in trange(recipe.steps, desc="code head", disable=not progress):
        rows = rng.choice(len(embeddings), batch, replace=False)
        picks = rng.integers(0, views.shape[1], (2, batch))
        losses = step(views[rows, picks[0]], views[rows, picks[1]], embeddings[rows])
        if log is not None and (index + 1) % 100 == 0:
            log(index + 1, {k: float(v) for k, v in losses.items()})
    return LinearHash(itq.mean, projection.numpy(), method=recipe.describe())


def fit_code_head(encoder, images, recipe, progress=False):
    """Encode `images` (a float encoder's training corpus) and `recipe.views` augmented views,
    and train a code head on them (see `train_code_head`)."""
    embeddings = encoder.encode(images)
    views = encode_views(encoder, images, recipe.views, seed=recipe.seed, progress=progress)
    return train_code_head(embeddings, views, recipe, progress=progress)


# ----------------------------------------------------------------------------- the shipped head

ITQ_METHOD = "PCA + ITQ (50 iterations) on the L2-normalised training-corpus embeddings"


def fit_entry_head(encoder, family, images, bits=None, seed=0, progress=False):
    """(head, method description) of the hash head a registry entry ships, fitted on `images`:

    * a family with its own binarisation (BinGAN: the signs of its code layer) keeps it;
    * an entry with a `code_head` recipe gets a learned head (`fit_code_head`);
    * any other float encoder gets PCA + ITQ.

    `bits` overrides the code length (default: the recipe's, else 64).
    """
    entry = encoder.entry
    if family.hash_head == "sign":
        head = family.sign_hash_head(encoder.embedding_dim)
        return head, head.method
    recipe = entry.code_head
    if recipe is not None:
        recipe = recipe.replace(bits=bits or recipe.bits, seed=seed)
        head = fit_code_head(encoder, images, recipe, progress=progress)
        return head, head.method
    head = fit_itq(encoder.encode(images), bits or HASH_BITS, seed=seed)
    return head, ITQ_METHOD

