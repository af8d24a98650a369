"""Architecture families. Each module builds models from keyword arguments and touches no files."""

from zoo.models import bingan, sketch_gan, sketch_gan_plus

FAMILIES = {"sketch_gan": sketch_gan, "sketch_gan_plus": sketch_gan_plus, "bingan": bingan}


def get_family(name):
    if name not in FAMILIES:
        raise ValueError(f"Unknown architecture family {name!r}; known: {sorted(FAMILIES)}.")
    return FAMILIES[name]
