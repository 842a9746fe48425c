"""The package's layers: every module of ebr_ref imports only from its own level or a lower one.

Levels (the order of ``ebr_ref/__init__.py``'s docstring): backend 0, layers 1,
models 2, grounding 3, evaluation 4 and synthetic 4 (neither imports the
other), tools 5, pipeline 6, cli 7 (``ebr_ref/__main__.py``, the ``python -m
ebr_ref`` entry point, is the CLI's). ``ebr_ref/__init__.py`` (the public
re-exports) and ``ebr_ref/data`` are exempt. Every import statement counts,
including those inside functions, read from the source with ``ast`` (nothing
is imported). Besides: no module imports torch or protobuf, and weights_io is
imported only by the CLI.
"""

import ast

import pytest

from tests.paths import REPO

PACKAGE = REPO / "ebr_ref"
LEVELS = {
    "backend": 0,
    "layers": 1,
    "models": 2,
    "grounding": 3,
    "evaluation": 4,
    "synthetic": 4,
    "tools": 5,
    "pipeline": 6,
    "cli": 7,
    "__main__": 7,
}
SIBLINGS = {"evaluation": "synthetic", "synthetic": "evaluation"}  # the same level, not to be mixed
FORBIDDEN = {"torch", "google.protobuf", "protobuf"}
CLI_ONLY = {"weights_io"}


def _modules():
    """``[(dotted name, path)]`` of every module of ebr_ref but the exempt ones."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(REPO).with_suffix("")
        parts = rel.parts
        if rel.as_posix() == "ebr_ref/__init__" or parts[1] == "data":
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append((".".join(parts), path))
    return out


def _is_package(dotted):
    return (REPO / dotted.replace(".", "/") / "__init__.py").exists()


def _is_module(dotted):
    return _is_package(dotted) or (REPO / (dotted.replace(".", "/") + ".py")).exists()


def imported(dotted, path):
    """``[(line, absolute module name, name)]`` of every import in a module's source, relative ones resolved.

    ``from X import name`` counts as an import of ``X.name`` when that is a module
    (a submodule imported by name), else of ``X`` (with ``name`` the attribute
    taken from it; None for plain ``import X``).
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = dotted if path.name == "__init__.py" else dotted.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.append((node.lineno, sub, None) if _is_module(sub) else (node.lineno, target, alias.name))
    return out


def _level(dotted):
    """``(level, subpackage)`` of an ebr_ref module; None for the root package itself."""
    parts = dotted.split(".")
    if len(parts) == 1:
        return None
    if parts[1] not in LEVELS:
        pytest.fail(f"{dotted}: ebr_ref.{parts[1]} has no level in tests/test_layering.py; give it one")
    return LEVELS[parts[1]], parts[1]


MODULES = _modules()


def test_every_subpackage_has_a_level():
    tops = {dotted.split(".")[1] for dotted, _ in MODULES}
    assert tops <= set(LEVELS), sorted(tops - set(LEVELS))
    assert {"backend", "layers", "models", "grounding", "cli"} <= tops


def test_the_import_reader_resolves_relative_and_function_level_imports():
    found = imported("ebr_ref.grounding.frame_cnn", PACKAGE / "grounding" / "frame_cnn.py")
    assert any(name == "ebr_ref.models.stack" and attr == "run_eb" for _, name, attr in found)
    assert any(name == "ebr_ref.grounding.fused_readout" for _, name, _ in found)  # inside a method
    found = {name for _, name, _ in imported("ebr_ref.grounding", PACKAGE / "grounding" / "__init__.py")}
    assert "ebr_ref.grounding.ground" in found and "ebr_ref.layers.lstm" in found


@pytest.mark.parametrize("dotted, path", MODULES, ids=[d for d, _ in MODULES])
def test_imports_only_from_its_own_level_or_below(dotted, path):
    level, top = _level(dotted)
    bad = []
    for line, name, attr in imported(dotted, path):
        root = name.split(".")[0]
        if name.startswith(tuple(FORBIDDEN)) or root in FORBIDDEN:
            bad.append(f"line {line}: imports {name} (no module of ebr_ref imports torch or protobuf)")
        if root in CLI_ONLY and top not in ("cli", "__main__"):
            bad.append(f"line {line}: imports {name} (only ebr_ref.cli imports weights_io)")
        if root != "ebr_ref":
            continue
        other = _level(name)
        if other is None:  # the root package: its metadata only; what it re-exports comes from the subpackage
            if attr != "__version__":
                bad.append(f"line {line}: imports {attr!r} from ebr_ref itself; take it from its subpackage")
            continue
        if other[0] > level:
            bad.append(f"line {line}: {top} (level {level}) imports {name} (level {other[0]})")
        if SIBLINGS.get(top) == other[1]:
            bad.append(
                f"line {line}: {top} imports {name}; evaluation and synthetic must not import each other"
            )
    assert not bad, f"{path.relative_to(REPO)}:\n" + "\n".join(bad)
