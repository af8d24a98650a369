"""GAN-derived image encoders for searching visual archives of hand-drawn symbols."""


def list_models():
    """{name: one-line description} of every registered model."""
    from zoo.registry import REGISTRY

    return {name: entry.description for name, entry in sorted(REGISTRY.items())}


def load(name, weights_path=None, with_hash_head=True, precision="float32",
         calibration_images=None):
    """The Encoder of registered model `name`, with its shipped sha256-verified weights,
    computing in `precision` ("float32", "bfloat16", "int8" or "auto": zoo.precision; int8's
    calibration: zoo.loading.load)."""
    from zoo.loading import load as _load

    return _load(name, weights_path, with_hash_head, precision, calibration_images)


def locate(page, query, model="sketch_gan_merchant", **options):
    """Find the mark `query` on the page photograph `page` with a sliding box: ranked boxes
    (x, y, w, h, score) and a heat map (options and result: zoo.apps.locating.locate)."""
    from zoo.apps.locating import locate as _locate

    return _locate(page, query, model, **options)


def transfer(base, source, steps=500, **options):
    """Fine-tune registered model `base` on a folder of images or a named corpus (no labels)
    and export it as a new SavedModel version; see `zoo.apps.transferring.transfer`."""
    from zoo.apps.transferring import transfer as _transfer

    return _transfer(base, source, steps, **options)


def __getattr__(name):
    """`zoo.Index` (zoo.apps.index.Index: build, open, add, search an archive index), imported on
    first use like `load`, so that `import zoo` stays light."""
    if name == "Index":
        from zoo.apps.index import Index

        return Index
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
