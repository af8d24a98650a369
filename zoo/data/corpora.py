"""Named corpora: what a registry entry trains and evaluates on, described as data.

A corpus spec is a small dict, e.g. {"kind": "merchant_marks", "num_identities": 400,
"instances_per_identity": 5, "seed": 0} or {"kind": "omniglot", "subsets": [...]}. `load_corpus`
turns it into a `LabelledImages`; the labels serve evaluation only and never reach training.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class LabelledImages:
    images: np.ndarray  # float32 [N, S, S, 1] (S = 64; 32 for Fashion-MNIST)
    labels: np.ndarray  # int64 [N]: same label = exact match (identity, character)
    parts: tuple = ()  # per image, the part names (merchant marks only)

    def __len__(self):
        return len(self.images)


def describe(spec):
    """A one-line human description of a corpus spec."""
    if spec["kind"] == "merchant_marks":
        return (f"procedural merchant marks: {spec['num_identities']} identities x "
                f"{spec['instances_per_identity']} instances, seed {spec['seed']}")
    if spec["kind"] == "omniglot":
        return "Omniglot " + " + ".join(spec["subsets"]) + (
            " (every zip's copy of a drawing)" if spec.get("repeats") else "")
    if spec["kind"] == "folder":
        return f"image folder {spec['path']}"
    if spec["kind"] == "cifar10":
        return f"CIFAR-10 {spec['split']} split (python archive at a user-given path)"
    if spec["kind"] == "fashion_mnist":
        return f"Fashion-MNIST {spec['split']} split (28x28 padded to 32x32)"
    if spec["kind"] == "union":
        return " and ".join(describe(part) + (f" (x{repeats})" if repeats > 1 else "")
                            for part, repeats in spec["parts"])
    raise ValueError(f"Unknown corpus kind {spec['kind']!r}.")


def load_corpus(spec, data_dir=None):
    """Materialise a corpus spec. `data_dir` overrides where Omniglot's zips or a folder live."""
    kind = spec.get("kind")
    options = {k: v for k, v in spec.items() if k != "kind"}
    if kind == "union":
        return _union(options["parts"], data_dir)
    if kind == "merchant_marks":
        from zoo.data.merchant_marks import make_corpus

        corpus = make_corpus(**options)
        return LabelledImages(corpus.images, corpus.identities, corpus.parts)
    if kind == "omniglot":
        from zoo.data.omniglot import load_omniglot

        omniglot = load_omniglot(data_dir, subsets=tuple(options.get("subsets", ())),
                                 limit=options.get("limit"),
                                 repeats=bool(options.get("repeats", False)))
        return LabelledImages(omniglot.images, omniglot.characters)
    if kind == "folder":
        from zoo.data.images import load_image_folder

        folder = load_image_folder(data_dir or options["path"])
        return LabelledImages(folder.images, np.arange(len(folder), dtype=np.int64))
    if kind == "fashion_mnist":
        from zoo.data.fashion_mnist import load_fashion_mnist

        images, labels = load_fashion_mnist(data_dir, split=options.get("split", "train"))
        return LabelledImages(images, labels)
    if kind == "cifar10":
        from zoo.data.cifar10 import load_cifar10

        if data_dir is None:
            raise ValueError("CIFAR-10 is not shipped: pass the path of cifar-10-python.tar.gz "
                             "(--data-dir).")
        images, labels = load_cifar10(data_dir, split=options.get("split", "train"))
        return LabelledImages(images, labels)
    raise ValueError(f"Unknown corpus kind {kind!r}; expected merchant_marks, omniglot, folder, "
                     f"fashion_mnist, cifar10 or union.")


def _union(parts, data_dir):
    """Corpora together, [(spec, repeats), ...]: each part's images `repeats` times (to balance
    a small archive against a large one); labels kept apart (part k's labels offset past part
    k - 1's), parts dropped (only merchant marks have them)."""
    images, labels, offset = [], [], 0
    for spec, repeats in parts:
        if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
            raise ValueError(f"Expected a positive whole number of repeats for corpus "
                             f"{describe(spec)!r}, got {repeats!r}.")
        part = load_corpus(spec, data_dir)
        _, ids = np.unique(part.labels, return_inverse=True)
        images += [part.images] * repeats
        labels += [ids.astype(np.int64) + offset] * repeats
        offset += int(ids.max()) + 1 if len(ids) else 0
    sizes = {image.shape[1:] for image in images}
    if len(sizes) != 1:
        raise ValueError(f"A union's corpora must share one image size; got {sorted(sizes)}.")
    return LabelledImages(np.concatenate(images), np.concatenate(labels))
