"""Architecture families. Each module builds models from keyword arguments, touches no files and
declares its contract once (`FAMILY`, a zoo.models.family.Family)."""

from zoo.models import bingan, bingan_plus, sketch_gan, sketch_gan_plus

FAMILIES = {module.FAMILY.name: module.FAMILY
            for module in (sketch_gan, sketch_gan_plus, bingan, bingan_plus)}


def get_family(name):
    if name not in FAMILIES:
        raise ValueError(f"Unknown architecture family {name!r}; known: {sorted(FAMILIES)}.")
    return FAMILIES[name]
