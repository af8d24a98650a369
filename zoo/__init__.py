"""GAN-derived image encoders for searching visual archives of hand-drawn symbols."""


def list_models():
    """{name: one-line description} of every registered model."""
    from zoo.registry import REGISTRY

    return {name: entry.description for name, entry in sorted(REGISTRY.items())}


def load(name, weights_path=None, with_hash_head=True):
    """The Encoder of registered model `name`, with its shipped sha256-verified weights."""
    from zoo.loading import load as _load

    return _load(name, weights_path, with_hash_head)
