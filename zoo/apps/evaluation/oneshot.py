"""Omniglot 20-way one-shot classification (Lake et al., Science 2015; evaluation.md section 3).

`all_runs.zip` (from the Omniglot repository, MIT licence) holds 20 runs. Each run has 20
training images `runNN/training/classNN.png` (one per character, drawn by one person) and 20
test images `runNN/test/itemNN.png` (the same characters drawn by other people), from the
evaluation alphabets; `runNN/class_labels.txt` pairs each test image with its training image,
one "test training" line each. A method classifies every test image as its most similar training
image; the error rate of a run is the fraction misclassified, and the score is the mean over runs.

Methods, all in the same run on the same images:

- an encoder (anything with `.encode(images) -> [N, D]` unit vectors): images preprocessed as
  `zoo.data.images.load_image` does (decode, grayscale, invert, crop to ink, pad, 64x64),
  nearest training image by dot product;
- "raw pixels": the same 64x64 preprocessed images, flattened, cosine similarity;
- "MHD": the Modified Hausdorff Distance (Dubuisson & Jain 1994) between the ink pixels of the
  original 105x105 images, as in the dataset's demo (demo_classification.py): the points are the
  (row, column) coordinates of the black stroke pixels, centred on their mean, and
  MHD(A, B) = max(mean over a in A of min over b in B of |a - b|, the same from B to A).
  The demo reports 38.8% error.

Ties go to the first training class in file order. Nothing here trains on these images.
"""

import dataclasses
import os
import re
import zipfile

import numpy as np
from scipy.spatial.distance import cdist

from zoo.data.images import decode_image, preprocess
from zoo.data.omniglot import SOURCE as OMNIGLOT_SOURCE

RUNS_ZIP = "all_runs.zip"
RAW_PIXELS = "raw pixels"
MHD = "MHD"
_LABELS_PATTERN = re.compile(r"^(run\d+)/class_labels\.txt$")


@dataclasses.dataclass(frozen=True)
class OneShotRun:
    """One 20-way run: originals (bool ink masks) and preprocessed images, with the answers."""

    name: str  # e.g. "run01"
    training_files: tuple  # member names, sorted
    test_files: tuple  # member names, sorted
    answers: np.ndarray  # int64 [num_test]: index into training_files of each test image's class
    training_ink: tuple  # bool [105, 105] per training image, True = stroke
    test_ink: tuple
    training_images: np.ndarray  # float32 [num_training, 64, 64, 1], strokes 1 on black
    test_images: np.ndarray


def runs_zip_path(path=None):
    """`path` if it is a zip, else path/all_runs.zip; default: the Omniglot data folder."""
    from zoo.data.omniglot import default_omniglot_dir

    path = path or default_omniglot_dir()
    if os.path.isdir(path):
        path = os.path.join(path, RUNS_ZIP)
    if not os.path.isfile(path):
        raise ValueError(f"Omniglot one-shot runs {path!r} not found. Pass the folder holding "
                         f"{RUNS_ZIP} (or the zip itself) or set ZOO_OMNIGLOT_DIR; nothing is "
                         f"downloaded. The zip comes from {OMNIGLOT_SOURCE}.")
    return path


def _ink(data):
    """Stroke mask of an original Omniglot image: black pixels on white paper."""
    return decode_image(data) < 0.5


def load_runs(path=None, runs=None):
    """Read the one-shot runs from all_runs.zip (or the folder holding it).

    `runs` keeps only the first `runs` runs (for quick checks).
    """
    path = runs_zip_path(path)
    loaded = []
    with zipfile.ZipFile(path) as archive:
        run_names = sorted(m.group(1) for m in map(_LABELS_PATTERN.match, archive.namelist()) if m)
        if not run_names:
            raise ValueError(f"No runNN/class_labels.txt found in {path!r}.")
        for run_name in run_names[:runs]:
            pairs = [line.split() for line in
                     archive.read(f"{run_name}/class_labels.txt").decode().splitlines()
                     if line.strip()]
            if any(len(pair) != 2 for pair in pairs):
                raise ValueError(f"{run_name}/class_labels.txt: expected 'test training' pairs.")
            training_files = tuple(sorted({training for _, training in pairs}))
            test_files = tuple(sorted(test for test, _ in pairs))
            answer_of = dict(pairs)
            answers = np.array([training_files.index(answer_of[t]) for t in test_files], np.int64)
            data = {member: archive.read(member) for member in training_files + test_files}
            loaded.append(OneShotRun(
                name=run_name, training_files=training_files, test_files=test_files,
                answers=answers,
                training_ink=tuple(_ink(data[m]) for m in training_files),
                test_ink=tuple(_ink(data[m]) for m in test_files),
                training_images=_preprocessed(data[m] for m in training_files),
                test_images=_preprocessed(data[m] for m in test_files),
            ))
    return loaded


def _preprocessed(blobs):
    images = [preprocess(decode_image(blob))[..., None] for blob in blobs]
    return np.stack(images).astype(np.float32)


# ----------------------------------------------------------------------------- distances


def ink_points(ink, centre=True):
    """(row, column) coordinates of the True pixels of a mask, float [n, 2], centred on their
    mean when `centre` (as the dataset's demo does)."""
    points = np.argwhere(np.asarray(ink, bool)).astype(np.float64)
    if len(points) == 0:
        raise ValueError("The image has no ink pixels.")
    return points - points.mean(axis=0) if centre else points


def modified_hausdorff_distance(points_a, points_b):
    """MHD(A, B) = max(mean_a min_b |a - b|, mean_b min_a |a - b|) (Dubuisson & Jain 1994)."""
    points_a, points_b = np.asarray(points_a, np.float64), np.asarray(points_b, np.float64)
    if len(points_a) == 0 or len(points_b) == 0:
        raise ValueError("Both point sets need at least one point.")
    distances = cdist(points_a, points_b)
    return float(max(distances.min(axis=1).mean(), distances.min(axis=0).mean()))


def mhd_matrix(test_ink, training_ink):
    """[num_test, num_training] Modified Hausdorff Distances between centred ink points."""
    test_points = [ink_points(ink) for ink in test_ink]
    training_points = [ink_points(ink) for ink in training_ink]
    return np.array([[modified_hausdorff_distance(a, b) for b in training_points]
                     for a in test_points])


def error_rate(scores, answers, higher_is_better=True):
    """Fraction of rows whose best column (first on ties) is not the answer."""
    scores = np.asarray(scores)
    predicted = np.argmax(scores, axis=1) if higher_is_better else np.argmin(scores, axis=1)
    return float(np.mean(predicted != np.asarray(answers)))


# ----------------------------------------------------------------------------- the protocol


def one_shot_errors(encoders, runs, baselines=True):
    """Error rate per run and method, and the mean over runs.

    `encoders` is {label: object with .encode}; `runs` a list of `OneShotRun`. Returns
    {"runs": [names], "errors": {method: [per run]}, "mean_error": {method: float}}.
    """
    from zoo.apps.evaluation.invariance import RawPixelEncoder

    if not runs:
        raise ValueError("No one-shot runs to evaluate.")
    methods = dict(encoders)
    if baselines:
        methods[RAW_PIXELS] = RawPixelEncoder()
    errors = {method: [] for method in methods}
    if baselines:
        errors[MHD] = []
    for run in runs:
        for method, encoder in methods.items():
            similarity = encoder.encode(run.test_images) @ encoder.encode(run.training_images).T
            errors[method].append(error_rate(similarity, run.answers))
        if baselines:
            errors[MHD].append(error_rate(mhd_matrix(run.test_ink, run.training_ink),
                                          run.answers, higher_is_better=False))
    return {"runs": [run.name for run in runs], "errors": errors,
            "mean_error": {method: float(np.mean(values)) for method, values in errors.items()}}
