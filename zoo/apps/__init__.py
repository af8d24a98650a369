"""The applications built on the zoo's core (ARCHITECTURE.md): the `zoo` command line, the
archive index, locating marks on pages, transfer to a new archive, the Beam pipeline, the search
page, the demo, the evaluations and MODELS.md. They import the core; the core never imports them
(tests/test_layers.py)."""
