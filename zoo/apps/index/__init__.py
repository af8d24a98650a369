"""Search an archive: index its images with the zoo's encoders, then query by example.

    from zoo.apps.index import Index
    idx = Index.build("my_archive.idx", "my_archive/", models=("sketch_neighbours_merchant",))
    hits = Index.open("my_archive.idx").search("query.png", k=8)

`index.py` holds the `Index` class, `store.py` the on-disk format (crash-safe, verified),
`encoding.py` the file pipeline, `preprocess.py` the preprocessing in numpy, `search.py` the
faiss searchers and their numpy references. `zoo index build|add` and `zoo search` are the CLI.
"""

from zoo.apps.index.index import AddReport, Hit, Index, Item

__all__ = ["Index", "Item", "Hit", "AddReport"]
