"""The zoo's registry: which models exist, how each was trained, and which weights it ships.

An entry is data: architecture family and keyword arguments, training corpus, recipe, paper.
What ships with the weights and how they were made (sha256, hash head, training command, time
and machine) lives in zoo/weights/manifest.json beside the weights files, written by `zoo
publish` and `zoo hash-head`; what was measured with them lives apart, in reports/results/
(zoo.apps.evaluation.results). Architecture code never reads either.
"""

import dataclasses
import json
import os

from zoo.atomic import write_json
from zoo.recipes import (PAPER, BinGANPlusRecipe, BinGANRecipe, CodeHeadRecipe, Recipe,
                                 SketchGANPlusRecipe)
from zoo.weights import PACKAGE_WEIGHTS_DIR

MANIFEST_PATH = os.path.join(PACKAGE_WEIGHTS_DIR, "manifest.json")
# What the manifest holds for each shipped model: the weights and their provenance, nothing
# measured (measured results: zoo.apps.evaluation.results).
SHIPPED_FIELDS = ("file", "sha256", "hash_head", "trained_with", "train_seconds", "machine")

BINGAN_PAPER = ("Zieba, Semberecki, El-Gaaly & Trzcinski, BinGAN: Learning Compact Binary "
                "Descriptors with a Regularized GAN, NeurIPS 2018, arXiv:1806.06778")
SKETCH_PAPER = "Creswell & Bharath, Adversarial Training for Sketch Retrieval, ECCV-W 2016, arXiv:1607.02748"

# Named corpora (see zoo.data.corpora.load_corpus). Labels are used for evaluation only.
CORPORA = {
    "merchant_train": {"kind": "merchant_marks", "num_identities": 400,
                       "instances_per_identity": 5, "seed": 0},
    # Held-out identities, 10 drawings each, so that P@8 can reach 1 (9 true matches a query).
    "merchant_eval": {"kind": "merchant_marks", "num_identities": 200,
                      "instances_per_identity": 10, "seed": 1},
    # 242 characters x 20 drawers = 4,840 images. The two zips both hold Greek and Latin; each
    # drawing is read once, and a character is one label whichever zip it came from.
    "omniglot_background": {"kind": "omniglot",
                            "subsets": ["images_background_small1", "images_background_small2"]},
    # What the shipped Omniglot entries trained on: both zips as they are, so the 1,000 Greek and
    # Latin drawings twice (5,840 images). Kept so that `zoo train` repeats those trainings on
    # the same images; evaluation uses omniglot_background.
    "omniglot_background_repeated": {
        "kind": "omniglot", "subsets": ["images_background_small1", "images_background_small2"],
        "repeats": True},
    # BinGAN trains on the 60,000 training images; the hashing protocol (zoo evaluate hashing)
    # queries 1,000 seeded images of all 70,000 against the other 69,000.
    "fashion_mnist_train": {"kind": "fashion_mnist", "split": "train"},
    "fashion_mnist_all": {"kind": "fashion_mnist", "split": "all"},
    # CIFAR-10 from the python archive at a path you give (--data-dir); never downloaded.
    "cifar10_train": {"kind": "cifar10", "split": "train"},
    "cifar10_all": {"kind": "cifar10", "split": "all"},
}

# One model for both archives (issue 18): the 2,000 merchant marks twice beside Omniglot's
# background drawings (5,840 as trained, with the repeats), so each archive gives about half of
# the training images.
CORPORA["merchant_and_omniglot"] = {
    "kind": "union",
    "parts": [(CORPORA["merchant_train"], 2), (CORPORA["omniglot_background_repeated"], 1)]}


# Each evaluation archive's counterpart: where a model trained on one is scored as on an archive
# it never saw (transfer; MODELS.md, the code-head probe).
TRANSFER_ARCHIVE = {"merchant_eval": "omniglot_background", "omniglot_background": "merchant_eval"}

# The encoder the tools default to for an archive of marks (zoo demo, zoo index build, zoo locate,
# the region index): the best on merchant_eval (MODELS.md, issue 18), and on the page-archive
# benchmark it finds more hidden marks than sketch_gan_plus_merchant (README, "Search a page
# archive"). Same network and cost as sketch-GAN+.
RECOMMENDED = "sketch_neighbours_merchant"


def get_corpus(name):
    if name not in CORPORA:
        raise ValueError(f"Unknown corpus {name!r}; known: {', '.join(sorted(CORPORA))}.")
    return CORPORA[name]


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    name: str
    description: str
    family: str
    architecture: dict
    corpus: str  # name in CORPORA it is trained on (no labels used)
    eval_corpus: str  # name in CORPORA retrieval is measured on (labels for scoring only)
    recipe: Recipe
    paper: str
    licence: str = "MIT (weights trained by this project)"
    ships_weights: bool = True  # False: a buildable, trainable configuration without weights
    similarity: str = "dot product of L2-normalised embeddings"
    preprocessing: str = ("grayscale, invert light backgrounds, crop to ink, pad to square with a "
                          "3 px margin, resize to 64x64; strokes 1 on black 0")
    # How the shipped hash head is made for a float encoder: None = PCA + ITQ fitted after
    # training; a CodeHeadRecipe = a learned code head (zoo/training/code_head.py).
    code_head: CodeHeadRecipe = None

    @property
    def weights_file(self):
        return os.path.join(PACKAGE_WEIGHTS_DIR, f"{self.name}.weights.h5")

    @property
    def hash_head_file(self):
        return os.path.join(PACKAGE_WEIGHTS_DIR, f"{self.name}.hash.npz")

    @property
    def published(self):
        """The manifest record of shipped weights (SHIPPED_FIELDS; {} when none ship yet)."""
        return read_manifest()["models"].get(self.name, {})


REGISTRY = {}


def register(entry):
    if entry.name in REGISTRY:
        raise ValueError(f"Model {entry.name!r} is registered twice.")
    REGISTRY[entry.name] = entry
    return entry


def shipped_names():
    """Names of the entries that ship weights (every entry but GPU-only configurations)."""
    return sorted(name for name, entry in REGISTRY.items() if entry.ships_weights)


def get_entry(name):
    if name not in REGISTRY:
        raise ValueError(f"Unknown model {name!r}; available: {', '.join(sorted(REGISTRY))}.")
    return REGISTRY[name]


def read_manifest():
    """{"models": {name: {field: value for field in SHIPPED_FIELDS}}}."""
    if not os.path.exists(MANIFEST_PATH):
        return {"models": {}}
    with open(MANIFEST_PATH) as handle:
        return json.load(handle)


def write_manifest(manifest):
    """Write the manifest (atomically); refuse anything but shipped weights' fields."""
    extra = sorted(set(manifest) - {"models"}) + sorted(
        f"models.{name}.{field}" for name, record in manifest.get("models", {}).items()
        for field in set(record) - set(SHIPPED_FIELDS))
    if extra:
        raise ValueError(f"Expected the weights manifest to hold only models' "
                         f"{', '.join(SHIPPED_FIELDS)}; got {', '.join(extra)}. Measured "
                         f"results are recorded with zoo.apps.evaluation.results.")
    write_json(MANIFEST_PATH, manifest, indent=2, sort_keys=True)


# ----------------------------------------------------------------------------- entries

register(ModelEntry(
    name="sketch_gan_merchant",
    description="sketch-GAN encoder (9x9 + 5x5 filters, 1024-d) trained on procedural merchant marks",
    family="sketch_gan", architecture={"architecture": "sketch", "latent_dim": 2},
    corpus="merchant_train", eval_corpus="merchant_eval", recipe=PAPER, paper=SKETCH_PAPER,
))
register(ModelEntry(
    name="thin_gan_merchant",
    description="thin-GAN encoder (3x3 filters, 1024-d) trained on procedural merchant marks",
    family="sketch_gan", architecture={"architecture": "thin", "latent_dim": 2},
    corpus="merchant_train", eval_corpus="merchant_eval", recipe=PAPER, paper=SKETCH_PAPER,
))
register(ModelEntry(
    name="sketch_gan_omniglot",
    description="sketch-GAN encoder trained on Omniglot background_small1 + small2 (no labels)",
    family="sketch_gan", architecture={"architecture": "sketch", "latent_dim": 2},
    corpus="omniglot_background_repeated", eval_corpus="omniglot_background", recipe=PAPER,
    paper=SKETCH_PAPER,
    licence="MIT (weights trained by this project on Omniglot, MIT licence)",
))

# sketch-GAN+ (issue 8): the improvements measured in MODELS.md's ablation, no labels anywhere.
SKETCH_PLUS_ARCHITECTURE = {"widths": [16, 32, 64, 128], "latent_dim": 32, "projection_dim": 64,
                            "embedding_dim": 256}
SKETCH_PLUS_RECIPE = SketchGANPlusRecipe()
# Issue 14: their 64-bit codes come from a learned head, not ITQ (MODELS.md, "Learned 64-bit
# codes"): the probe's best row that also keeps the Omniglot head ahead of ITQ on merchant marks.
SKETCH_PLUS_CODE_HEAD = CodeHeadRecipe(steps=4000, lambda_distill=0.3)
register(ModelEntry(
    name="sketch_gan_plus_merchant",
    description="sketch-GAN+ encoder (wider D, augmentation, contrastive task in D, pooled "
                "multi-layer read-out, PCA whitening; 256-d) trained on procedural merchant marks",
    family="sketch_gan_plus", architecture=SKETCH_PLUS_ARCHITECTURE,
    corpus="merchant_train", eval_corpus="merchant_eval", recipe=SKETCH_PLUS_RECIPE,
    paper=SKETCH_PAPER + "; improvements: this project (MODELS.md)",
    code_head=SKETCH_PLUS_CODE_HEAD,
))
register(ModelEntry(
    name="sketch_gan_plus_omniglot",
    description="sketch-GAN+ encoder (see sketch_gan_plus_merchant) trained on Omniglot "
                "background_small1 + small2 (no labels)",
    family="sketch_gan_plus", architecture=SKETCH_PLUS_ARCHITECTURE,
    corpus="omniglot_background_repeated", eval_corpus="omniglot_background",
    recipe=SKETCH_PLUS_RECIPE,
    paper=SKETCH_PAPER + "; improvements: this project (MODELS.md)",
    licence="MIT (weights trained by this project on Omniglot, MIT licence)",
    code_head=SKETCH_PLUS_CODE_HEAD,
))

# Issue 18: the same network trained by its contrastive task alone, four times longer. The
# ablation found that the GAN adds nothing to sketch-GAN+'s encoder (MODELS.md, "What does the
# GAN add?"): without the generator and the real/fake loss, and with 10,000 steps instead of
# 2,500, the encoder is better on every measure. No labels anywhere, as before.
SKETCH_CONTRASTIVE_RECIPE = SKETCH_PLUS_RECIPE.replace(lambda_gan=0.0, iterations=10_000,
                                                       checkpoint_every=200)
_CONTRASTIVE_DESCRIPTION = ("the sketch-GAN+ network (pooled multi-layer read-out, PCA "
                            "whitening; 256-d) trained by its contrastive task alone, without "
                            "the generator, for 10,000 steps")
_OMNIGLOT_LICENCE = "MIT (weights trained by this project; Omniglot, MIT licence)"
for _suffix, _corpus, _eval_corpus, _on, _licence in (
        ("merchant", "merchant_train", "merchant_eval", "procedural merchant marks",
         ModelEntry.licence),
        ("omniglot", "omniglot_background_repeated", "omniglot_background",
         "Omniglot background_small1 + small2 (no labels)", _OMNIGLOT_LICENCE),
        ("joint", "merchant_and_omniglot", "merchant_eval",
         "procedural merchant marks and Omniglot background_small1 + small2 together (one "
         "model for both archives; no labels)", _OMNIGLOT_LICENCE)):
    register(ModelEntry(
        name=f"sketch_contrastive_{_suffix}",
        description=f"{_CONTRASTIVE_DESCRIPTION}, on {_on}",
        family="sketch_gan_plus", architecture=SKETCH_PLUS_ARCHITECTURE,
        corpus=_corpus, eval_corpus=_eval_corpus, recipe=SKETCH_CONTRASTIVE_RECIPE,
        paper=SKETCH_PAPER + "; the contrastive recipe: this project (MODELS.md, issue 18)",
        licence=_licence, code_head=SKETCH_PLUS_CODE_HEAD,
    ))

# Issue 18: neighbour partners. Each single-archive contrastive entry trained on from its 10,000
# steps, the second view of half of each batch now drawn from one of the image's 3 nearest
# neighbours in the training corpus by that shipped entry's embeddings (no labels): another
# drawing of the same mark where the corpus holds several, which augmenting one drawing cannot
# give. `zoo train sketch_neighbours_<archive>` repeats the 10,000 steps (the same batches and
# views), then mines the neighbours and goes on (MODELS.md, the ablation's neighbour rows).
NEIGHBOUR_STEPS = {"merchant": 24_000, "omniglot": 12_000}
for _suffix, _corpus, _eval_corpus, _on, _licence in (
        ("merchant", "merchant_train", "merchant_eval", "procedural merchant marks",
         ModelEntry.licence),
        ("omniglot", "omniglot_background_repeated", "omniglot_background",
         "Omniglot background_small1 + small2 (no labels)", _OMNIGLOT_LICENCE)):
    register(ModelEntry(
        name=f"sketch_neighbours_{_suffix}",
        description=f"sketch_contrastive_{_suffix} trained on to "
                    f"{NEIGHBOUR_STEPS[_suffix]:,} steps with neighbour partners (the second "
                    f"view of half of each batch is of one of the image's 3 nearest neighbours "
                    f"by sketch_contrastive_{_suffix}), on {_on}",
        family="sketch_gan_plus", architecture=SKETCH_PLUS_ARCHITECTURE,
        corpus=_corpus, eval_corpus=_eval_corpus,
        recipe=SKETCH_CONTRASTIVE_RECIPE.replace(
            iterations=NEIGHBOUR_STEPS[_suffix], neighbours=0.5, neighbour_k=3,
            neighbours_from=f"sketch_contrastive_{_suffix}", neighbours_after=10_000),
        paper=SKETCH_PAPER + "; the contrastive recipe and neighbour partners: this project "
                             "(MODELS.md, issue 18)",
        licence=_licence, code_head=SKETCH_PLUS_CODE_HEAD,
    ))

# BinGAN. The paper-sized retrieval configuration (CIFAR-10, 3 channels, widths 96/192, the
# Salimans generator, batch 25, 400 epochs) is registered for GPU runs; it ships no weights.
BINGAN_PAPER_RECIPE = BinGANRecipe()
for _bits in (16, 32, 64):
    register(ModelEntry(
        name=f"bingan_cifar10_{_bits}",
        description=f"BinGAN retrieval discriminator, paper size, {_bits}-bit codes, CIFAR-10 "
                    f"(GPU recipe; no weights shipped)",
        family="bingan",
        architecture={"num_bits": _bits, "variant": "retrieval", "widths": [96, 192],
                      "generator_widths": [512, 256, 128], "channels": 3},
        corpus="cifar10_train", eval_corpus="cifar10_all", recipe=BINGAN_PAPER_RECIPE,
        paper=BINGAN_PAPER, similarity="Hamming distance of the code bits",
        preprocessing="RGB 32x32, scaled to [0, 1]", ships_weights=False,
    ))

# The CPU preset shipped for Fashion-MNIST (every deviation from the paper is in MODELS.md):
# 1 channel, D widths 32/64 instead of 96/192, generator widths 128/64/32 instead of 512/256/128,
# batch 64 instead of 25, and a few epochs instead of 400.
BINGAN_CPU_RECIPE = BinGANRecipe(iterations=1000, batch_size=64, checkpoint_every=250,
                                 sample_every=500)
for _bits in (16, 32, 64):
    register(ModelEntry(
        name=f"bingan_fashion_{_bits}",
        description=f"BinGAN {_bits}-bit binary descriptors trained on Fashion-MNIST "
                    f"(CPU preset, no labels)",
        family="bingan",
        architecture={"num_bits": _bits, "variant": "retrieval", "widths": [32, 64],
                      "generator_widths": [128, 64, 32], "channels": 1},
        corpus="fashion_mnist_train", eval_corpus="fashion_mnist_all", recipe=BINGAN_CPU_RECIPE,
        paper=BINGAN_PAPER, similarity="Hamming distance of the code bits",
        preprocessing="grayscale 28x28 zero-padded to 32x32 (float [0, 1]); the bytes "
                      "signatures crop to ink and resize to 28x28 inside 32x32",
        licence="MIT (weights trained by this project on Fashion-MNIST, MIT licence)",
    ))

# BinGAN+ (issue 14, part 2): one network with 16-, 32- and 64-bit code heads trained together by
# one run; each entry reads its own head, and the three ship the same weights (MODELS.md).
BINGAN_PLUS_RECIPE = BinGANPlusRecipe()
BINGAN_PLUS_ARCHITECTURE = {"heads": [16, 32, 64], "widths": [32, 64],
                            "generator_widths": [128, 64, 32], "channels": 1,
                            "dropout": [0.0, 0.2, 0.2], "high_grid": 3}
for _bits in (16, 32, 64):
    register(ModelEntry(
        name=f"bingan_plus_fashion_{_bits}",
        description=f"BinGAN+ {_bits}-bit binary descriptors for Fashion-MNIST: BinGAN's "
                    f"discriminator, game and regularisers plus a contrastive task on the codes "
                    f"(no labels)",
        family="bingan_plus",
        architecture={"num_bits": _bits, **BINGAN_PLUS_ARCHITECTURE},
        corpus="fashion_mnist_train", eval_corpus="fashion_mnist_all", recipe=BINGAN_PLUS_RECIPE,
        paper=BINGAN_PAPER + "; improvements: this project (MODELS.md)",
        similarity="Hamming distance of the code bits",
        preprocessing="grayscale 28x28 zero-padded to 32x32 (float [0, 1]); the bytes "
                      "signatures crop to ink and resize to 28x28 inside 32x32",
        licence="MIT (weights trained by this project on Fashion-MNIST, MIT licence)",
    ))
