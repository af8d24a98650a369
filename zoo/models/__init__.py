"""Architecture families. Each module builds models from keyword arguments and touches no files."""

from zoo.models import bingan, sketch_gan

FAMILIES = {"sketch_gan": sketch_gan, "bingan": bingan}


def get_family(name):
    if name not in FAMILIES:
        raise ValueError(f"Unknown architecture family {name!r}; known: {sorted(FAMILIES)}.")
    return FAMILIES[name]
