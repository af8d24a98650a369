"""Omniglot (Lake et al., Science 2015; MIT licence), read from the official zip files in place.

1,623 hand-drawn characters from 50 alphabets, each drawn once by 20 different people: real
hand-drawn symbols with a free notion of "the same mark by another hand". The zoo trains on
`images_background_small1` + `images_background_small2` (242 characters x 20 drawers = 4,840
images) without labels; character and drawer ids are returned for evaluation only.

The two small background sets overlap: both hold the Greek and Latin alphabets (1,000 identical
files). A file that an earlier subset already gave is read once, and a character's id depends on
its alphabet and character only, never on the zip it came from; `repeats=True` reads every
subset's copy (the 5,840 images the Omniglot entries shipped before 2026-11-28 trained on).

Nothing is downloaded: pass the folder holding the zips, or set ZOO_OMNIGLOT_DIR. Inside a
checkout of this project the default is the shared data folder beside the repository.
"""

import dataclasses
import os
import re
import zipfile

import numpy as np

from zoo.data.images import DEFAULT_MARGIN, DEFAULT_SIZE, decode_image, preprocess

BACKGROUND_SMALL = ("images_background_small1", "images_background_small2")
SOURCE = "https://github.com/brendenlake/omniglot (folder python/, MIT licence)"
_PATH_PATTERN = re.compile(r"^([^/]+)/([^/]+)/([^/]+)/(\d+)_(\d+)\.png$")


def default_omniglot_dir():
    """ZOO_OMNIGLOT_DIR if set, else ../shared/data/omniglot beside the repository."""
    if os.environ.get("ZOO_OMNIGLOT_DIR"):
        return os.environ["ZOO_OMNIGLOT_DIR"]
    repository = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.path.join(os.path.dirname(repository), "shared", "data", "omniglot")


@dataclasses.dataclass(frozen=True)
class Omniglot:
    images: np.ndarray  # float32 [N, size, size, 1], strokes 1 on black
    characters: np.ndarray  # int64 [N], one id per (alphabet, character)
    drawers: np.ndarray  # int64 [N], 1..20
    names: tuple  # N member names inside the zips, e.g. 'images_background_small1/Latin/character01/0686_03.png'

    def __len__(self):
        return len(self.names)


def _zip_path(root, subset):
    path = os.path.join(root, f"{subset}.zip")
    if not os.path.isfile(path):
        raise ValueError(
            f"Omniglot zip {path!r} not found. Pass the folder holding the official Omniglot zips "
            f"(e.g. {subset}.zip) or set ZOO_OMNIGLOT_DIR; nothing is downloaded. The zips come "
            f"from {SOURCE}."
        )
    return path


def load_omniglot(root=None, subsets=BACKGROUND_SMALL, size=DEFAULT_SIZE, margin=DEFAULT_MARGIN,
                  limit=None, repeats=False):
    """Read Omniglot subsets from their zips and preprocess them to white-on-black squares.

    A drawing (alphabet/character/file) that an earlier subset already held is skipped, unless
    `repeats`. `limit` keeps only the first `limit` characters of each subset (for quick tests).
    """
    root = root or default_omniglot_dir()
    images, characters, drawers, names = [], [], [], []
    character_ids, seen = {}, set()
    for subset in subsets:
        subset_characters = set()
        with zipfile.ZipFile(_zip_path(root, subset)) as archive:
            members = sorted(n for n in archive.namelist() if _PATH_PATTERN.match(n))
            for name in members:
                _, alphabet, character, _, drawer = _PATH_PATTERN.match(name).groups()
                drawing = name.split("/", 1)[1]  # the path below the subset's folder
                if drawing in seen and not repeats:
                    continue
                key = (alphabet, character)
                if key not in subset_characters:
                    if limit is not None and len(subset_characters) >= limit:
                        continue
                    subset_characters.add(key)
                seen.add(drawing)
                character_ids.setdefault(key, len(character_ids))
                images.append(preprocess(decode_image(archive.read(name)), size, margin))
                characters.append(character_ids[key])
                drawers.append(int(drawer))
                names.append(name)
    if not images:
        raise ValueError(f"No Omniglot images found in subsets {subsets} under {root!r}.")
    return Omniglot(
        images=np.stack(images)[..., None].astype(np.float32),
        characters=np.asarray(characters, np.int64),
        drawers=np.asarray(drawers, np.int64),
        names=tuple(names),
    )
