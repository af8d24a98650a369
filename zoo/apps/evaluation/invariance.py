"""Invariance of encodings to rotation, scale and shift (evaluation.md section 1; paper Fig. 5).

Creswell & Bharath (2016) show that sketch-GAN's encoding of a mark changes less than
thin-GAN's when the mark is rotated, rescaled or shifted. The protocol here:

1. Draw `num_samples` (100) images with a fixed seed from the model's training corpus.
2. For every setting of a transform (41 angles, 21 factors, 441 shifts; see
   `InvarianceProtocol`), transform the samples (zoo.apps.evaluation.transforms) and take the
   similarity of each sample's encoding before and after: the dot product of unit vectors.
3. Per setting, report the mean and standard deviation (over the samples, ddof = 0).
4. Chance level: mean similarity of `num_chance_pairs` (10,000) random pairs of different
   images of the same corpus (pairs of distinct indices, drawn with the same seed). Encoders
   have different similarity floors (post-ReLU features are never far apart), so every mean is
   also reported chance-normalised: (s - chance) / (1 - chance); 1 = unchanged, 0 = as similar
   as two unrelated marks.
5. Summary per transform: the chance-normalised mean similarity over all settings of it.

Baselines run on the same samples in the same run: raw pixels (L2-normalised flattened images)
and an untrained encoder of the same architecture (fresh weights from a fixed seed).
Everything is deterministic given `seed`.

Any object with `.encode(images) -> [N, D]` unit vectors can be measured
(`measure_invariance`); `run_invariance(names)` does the whole protocol for registered models.
"""

import dataclasses
import json

import numpy as np

from zoo.apps.evaluation import transforms
from zoo.apps.evaluation.retrieval import raw_pixel_embeddings

TRANSFORMS = ("rotation", "scale", "shift")
RAW_PIXELS = "raw pixels"
UNITS = {"rotation": "degrees, + = counter-clockwise", "scale": "factor",
         "shift": "pixels (dx, dy), + = right, down"}


def _steps(low, high, step):
    count = int(round((high - low) / step)) + 1
    return tuple(float(round(low + i * step, 6)) for i in range(count))


@dataclasses.dataclass(frozen=True)
class InvarianceProtocol:
    """The settings of evaluation.md section 1 (the defaults); smaller ones serve tests."""

    num_samples: int = 100
    num_chance_pairs: int = 10_000
    rotation_degrees: tuple = _steps(-10.0, 10.0, 0.5)  # 41 angles
    scale_factors: tuple = _steps(0.5, 1.5, 0.05)  # 21 factors
    shift_pixels: tuple = tuple(range(-10, 11))  # 21 x 21 = 441 (dx, dy) shifts
    batch_size: int = 2048  # images transformed and encoded at a time

    def __post_init__(self):
        if self.num_samples < 1 or self.num_chance_pairs < 1 or self.batch_size < 1:
            raise ValueError("num_samples, num_chance_pairs and batch_size must be positive.")
        for field in ("rotation_degrees", "scale_factors", "shift_pixels"):
            if len(getattr(self, field)) == 0:
                raise ValueError(f"InvarianceProtocol.{field} needs at least one setting.")

    def settings(self, transform):
        """The settings of one transform, in order: angles, factors, or (dx, dy) with dy major."""
        if transform == "rotation":
            return list(self.rotation_degrees)
        if transform == "scale":
            return list(self.scale_factors)
        if transform == "shift":
            return [(dx, dy) for dy in self.shift_pixels for dx in self.shift_pixels]
        raise ValueError(f"Unknown transform {transform!r}; expected one of {TRANSFORMS}.")

    def to_dict(self):
        return {field.name: list(getattr(self, field.name)) if isinstance(
            getattr(self, field.name), tuple) else getattr(self, field.name)
            for field in dataclasses.fields(self)}


def apply_transform(transform, images, setting):
    """`images` under one setting of `transform` ("rotation", "scale" or "shift")."""
    if transform == "rotation":
        return transforms.rotate(images, setting)
    if transform == "scale":
        return transforms.scale(images, setting)
    if transform == "shift":
        dx, dy = setting
        return transforms.shift(images, dx, dy)
    raise ValueError(f"Unknown transform {transform!r}; expected one of {TRANSFORMS}.")


def normalise(similarity, chance):
    """Chance-normalised similarity (s - chance) / (1 - chance): 1 = identical, 0 = chance."""
    if not chance < 1:
        raise ValueError(f"Cannot normalise with a chance level of {chance}; it must be below 1.")
    return (np.asarray(similarity, np.float64) - chance) / (1.0 - chance)


# ----------------------------------------------------------------------------- encoders


class RawPixelEncoder:
    """The raw-pixel baseline as an encoder: flattened images, L2-normalised."""

    name = RAW_PIXELS

    def encode(self, images):
        images = np.asarray(images, np.float32)
        return raw_pixel_embeddings(images.reshape(len(images), -1))


def untrained_encoder(name, seed=0):
    """An `Encoder` with the architecture of registered model `name` and freshly initialised
    weights, reproducible from `seed` (sets Keras' global random seed)."""
    import keras

    from zoo.encoder import Encoder
    from zoo.loading import build
    from zoo.models import get_family
    from zoo.registry import get_entry

    entry = get_entry(name)
    keras.utils.set_random_seed(seed)
    _, discriminator = build(name)
    feature_extractor = get_family(entry.family).build_feature_extractor(discriminator)
    return Encoder(untrained_label(name), feature_extractor, entry=None)


def untrained_label(name):
    return f"untrained {name}"


# ----------------------------------------------------------------------------- the protocol


def random_pairs(count, num_pairs, rng):
    """`num_pairs` index pairs (first, second) of distinct items out of `count`."""
    if count < 2:
        raise ValueError(f"Need at least 2 images to draw pairs of different images; got {count}.")
    first = rng.integers(0, count, num_pairs)
    second = (first + rng.integers(1, count, num_pairs)) % count
    return first, second


def draw_samples(corpus_size, protocol, seed):
    """(sample indices, (first, second) chance pairs), reproducible from `seed`."""
    if corpus_size < protocol.num_samples:
        raise ValueError(f"The corpus has {corpus_size} images; the protocol samples "
                         f"{protocol.num_samples}.")
    sample_seed, pair_seed = np.random.SeedSequence(seed).spawn(2)
    samples = np.sort(np.random.default_rng(sample_seed).choice(
        corpus_size, protocol.num_samples, replace=False))
    pairs = random_pairs(corpus_size, protocol.num_chance_pairs, np.random.default_rng(pair_seed))
    return samples, pairs


def chance_level(encoder, images, pairs, batch_size=2048):
    """Mean similarity of the image pairs (first[i], second[i]) under `encoder`."""
    first, second = pairs
    used = np.unique(np.concatenate([first, second]))
    embeddings = np.concatenate([encoder.encode(images[used[start:start + batch_size]])
                                 for start in range(0, len(used), batch_size)])
    position = np.searchsorted(used, np.arange(len(images)))
    similarity = np.sum(embeddings[position[first]] * embeddings[position[second]], axis=1)
    return float(np.mean(similarity, dtype=np.float64))


def measure_invariance(encoders, images, protocol=None, seed=0, transform_names=TRANSFORMS):
    """Run the protocol for `encoders` ({label: object with .encode}) on a corpus `images`.

    Returns {"sample_indices": [...], "rows": {label: row}} where a row is
    {"chance": c, "summary": {transform: normalised mean over settings},
     transform: {"settings", "mean", "std", "normalised", "normalised_std"}} with one entry per
    setting. All encoders see the same samples, pairs and transformed images.
    """
    protocol = protocol or InvarianceProtocol()
    images = np.asarray(images, np.float32)
    if images.ndim == 3:
        images = images[..., None]
    sample_indices, pairs = draw_samples(len(images), protocol, seed)
    samples = images[sample_indices]
    references = {label: np.asarray(encoder.encode(samples), np.float64)
                  for label, encoder in encoders.items()}
    rows = {label: {"chance": chance_level(encoder, images, pairs, protocol.batch_size)}
            for label, encoder in encoders.items()}
    settings_per_batch = max(1, protocol.batch_size // len(samples))
    for transform in transform_names:
        settings = protocol.settings(transform)
        similarities = {label: [] for label in encoders}  # per setting: [num_samples]
        for start in range(0, len(settings), settings_per_batch):
            chunk = settings[start:start + settings_per_batch]
            transformed = np.concatenate([apply_transform(transform, samples, setting)
                                          for setting in chunk])
            for label, encoder in encoders.items():
                encoded = np.asarray(encoder.encode(transformed), np.float64)
                encoded = encoded.reshape(len(chunk), len(samples), -1)
                similarities[label].extend(np.einsum("knd,nd->kn", encoded, references[label]))
        for label, row in rows.items():
            values = np.stack(similarities[label])  # [settings, samples]
            mean, std = values.mean(axis=1), values.std(axis=1)
            scale = 1.0 - row["chance"]
            row[transform] = {
                "settings": [list(s) if isinstance(s, tuple) else s for s in settings],
                "mean": mean.tolist(),
                "std": std.tolist(),
                "normalised": normalise(mean, row["chance"]).tolist(),
                "normalised_std": (std / scale).tolist(),
            }
            row.setdefault("summary", {})[transform] = float(normalise(values.mean(),
                                                                       row["chance"]))
    return {"sample_indices": sample_indices.tolist(), "rows": rows}


def run_invariance(names, seed=0, protocol=None, data_dir=None, baselines=True):
    """The invariance protocol for registered models, with baselines, grouped by corpus.

    Each model is measured on samples of its own training corpus; models sharing a corpus share
    the samples, the raw-pixel row and (per distinct architecture) the untrained row.
    Returns {"seed", "protocol", "corpora": {corpus: {"description", "models",
    "sample_indices", "rows": {label: row}}}, "summary": {corpus: {label: {transform: score}}}}.
    """
    from zoo import load
    from zoo.data.corpora import describe, load_corpus
    from zoo.registry import get_corpus, get_entry

    if not names:
        raise ValueError("Name at least one registered model to measure.")
    protocol = protocol or InvarianceProtocol()
    by_corpus = {}
    for name in dict.fromkeys(names):
        by_corpus.setdefault(get_entry(name).corpus, []).append(name)
    result = {"seed": seed, "protocol": protocol.to_dict(), "corpora": {}, "summary": {}}
    for corpus, corpus_names in by_corpus.items():
        encoders, kinds = {}, {}
        for name in corpus_names:
            encoders[name], kinds[name] = load(name, with_hash_head=False), "model"
        if baselines:
            encoders[RAW_PIXELS], kinds[RAW_PIXELS] = RawPixelEncoder(), "raw pixels"
            architectures = {}
            for name in corpus_names:
                entry = get_entry(name)
                key = (entry.family, json.dumps(entry.architecture, sort_keys=True))
                if key not in architectures:
                    architectures[key] = name
                    label = untrained_label(name)
                    encoders[label], kinds[label] = untrained_encoder(name, seed), "untrained"
        spec = get_corpus(corpus)
        data = load_corpus(spec, data_dir)
        measured = measure_invariance(encoders, data.images, protocol, seed)
        for label, row in measured["rows"].items():
            row["kind"] = kinds[label]
        result["corpora"][corpus] = {"description": describe(spec), "models": corpus_names,
                                     **measured}
        result["summary"][corpus] = {label: dict(row["summary"])
                                     for label, row in measured["rows"].items()}
    return result


def format_summary(summary):
    """A fixed-width text table of the per-transform chance-normalised means."""
    lines = []
    for corpus, rows in summary.items():
        width = max(len(label) for label in rows) + 2
        lines.append(f"{corpus}:")
        lines.append(" " * width + "".join(f"{t:>10s}" for t in TRANSFORMS))
        for label, scores in rows.items():
            lines.append(f"{label:{width}s}" + "".join(
                f"{scores[t]:10.4f}" if t in scores else f"{'-':>10s}" for t in TRANSFORMS))
    return "\n".join(lines)
