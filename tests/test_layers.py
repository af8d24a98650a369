"""The core never imports the applications built on it (ARCHITECTURE.md): checked on the source,
so a new import the wrong way fails here rather than in a review."""

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORE = ("zoo/models", "zoo/registry.py", "zoo/recipes.py", "zoo/weights.py", "zoo/loading.py",
        "zoo/encoder.py", "zoo/hashing.py", "zoo/data", "zoo/training", "export",
        "zoo/machine.py", "zoo/precision.py", "zoo/visualize.py", "zoo/atomic.py")
APPLICATIONS = ("zoo.index", "zoo.locating", "zoo.proposals", "zoo.transferring",
                "zoo.beam_pipeline", "zoo.web", "zoo.demo", "zoo.model_cards", "zoo.cli",
                "zoo.evaluation", "serving", "benchmarks")


def core_files():
    for part in CORE:
        path = os.path.join(REPO, part)
        if path.endswith(".py"):
            yield part
            continue
        for root, _, names in os.walk(path):
            yield from (os.path.relpath(os.path.join(root, name), REPO)
                        for name in sorted(names) if name.endswith(".py"))


def imported_modules(path, root=REPO):
    """(module, line) of every absolute import in the file `path` under `root`."""
    tree = ast.parse(open(os.path.join(root, path), encoding="utf-8").read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module, node.lineno


@pytest.mark.parametrize("path", sorted(core_files()))
def test_core_modules_do_not_import_applications(path):
    upward = [f"line {line}: {module}" for module, line in imported_modules(path)
              if any(module == app or module.startswith(app + ".") for app in APPLICATIONS)]
    assert not upward, f"{path} imports applications: {upward}"


def test_the_check_sees_imports_inside_functions(tmp_path):
    (tmp_path / "bad.py").write_text("import numpy\ndef f():\n    from zoo.index import Index\n")
    assert list(imported_modules("bad.py", root=str(tmp_path))) == [("numpy", 1),
                                                                     ("zoo.index", 3)]
