"""The core never imports the applications built on it (ARCHITECTURE.md): checked on the source,
so a new import the wrong way fails here rather than in a review."""

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORE = ("zoo/models", "zoo/registry.py", "zoo/recipes.py", "zoo/weights.py", "zoo/loading.py",
        "zoo/encoder.py", "zoo/hashing.py", "zoo/data", "zoo/training", "export",
        "zoo/machine.py", "zoo/precision.py", "zoo/quantization.py", "zoo/visualize.py",
        "zoo/atomic.py")
APPLICATIONS = ("zoo.apps", "serving", "benchmarks")
TOP_LEVEL_ENTRY = ("zoo/__init__.py", "zoo/__main__.py")  # `import zoo` and `python3 -m zoo`


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
            # `from zoo import apps` imports zoo.apps: each name counts as module.name
            yield from ((f"{node.module}.{alias.name}", node.lineno) for alias in node.names)


def is_application(module):
    return any(module == app or module.startswith(app + ".") for app in APPLICATIONS)


@pytest.mark.parametrize("path", sorted(core_files()))
def test_core_modules_do_not_import_applications(path):
    upward = [f"line {line}: {module}" for module, line in imported_modules(path)
              if is_application(module)]
    assert not upward, f"{path} imports applications: {upward}"


def test_the_check_sees_imports_inside_functions(tmp_path):
    (tmp_path / "bad.py").write_text("import numpy\ndef f():\n"
                                     "    from zoo.apps.index import Index\n"
                                     "    from zoo import apps\n    import zoo.apps.web.app\n")
    modules = list(imported_modules("bad.py", root=str(tmp_path)))
    assert modules == [("numpy", 1), ("zoo.apps.index.Index", 3), ("zoo.apps", 4),
                       ("zoo.apps.web.app", 5)]
    assert [module for module, _ in modules if is_application(module)] == [
        "zoo.apps.index.Index", "zoo.apps", "zoo.apps.web.app"]


def test_every_top_level_module_of_zoo_is_core():
    """The applications live in zoo/apps/; a module or package dropped directly under zoo/ must be
    listed in CORE (and so checked above), or moved to zoo/apps/."""
    top_level = []
    for name in sorted(os.listdir(os.path.join(REPO, "zoo"))):
        path = os.path.join(REPO, "zoo", name)
        if name.endswith(".py") or (os.path.isdir(path) and any(
                file.endswith(".py") for _, _, files in os.walk(path) for file in files)):
            top_level.append(f"zoo/{name}")
    assert "zoo/registry.py" in top_level and "zoo/models" in top_level
    unlisted = set(top_level) - set(CORE) - set(TOP_LEVEL_ENTRY) - {"zoo/apps"}
    assert not unlisted, f"not core, so they belong in zoo/apps/: {sorted(unlisted)}"
