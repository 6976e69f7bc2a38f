"""The package's layering: no import cycles, arrows pointing one way, no hidden imports.

Every `import` / `from ... import` in `effjax/` counts, at module level or inside a
function, so a cycle closed by a lazy import is found too.
"""

import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "effjax")

# package -> packages it must never import
FORBIDDEN = {
    "effjax.subnet": ("effjax.models", "effjax.compress", "effjax.train", "effjax.search", "effjax.quant"),
    "effjax.models": ("effjax.compress", "effjax.train", "effjax.search"),
    "effjax.search": ("effjax.models", "effjax.compress", "effjax.train", "effjax.quant", "effjax.data"),
    "effjax.train": ("effjax.job",),
}


def _modules() -> dict[str, str]:
    out = {}
    for folder, _, files in os.walk(ROOT):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
                out[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = path
    return out


def _imports(module: str, path: str, known: set) -> set:
    tree = ast.parse(open(path).read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")[: -node.level] if not path.endswith("__init__.py") else module.split(".")[
                    : len(module.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def _graph():
    modules = _modules()
    known = set(modules)
    return {m: _imports(m, p, known) for m, p in modules.items()}


def _package_imports(graph, module):
    """Modules `module` imports, counting a package's `__init__` as importing its own submodules' parents only."""
    return {d for d in graph[module] if not module.startswith(d + ".")}


def test_no_import_cycles():
    full = _graph()
    graph = {m: _package_imports(full, m) for m in full}
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layering(package):
    graph = _graph()
    bad = {m: sorted(d for d in deps if d.startswith(FORBIDDEN[package]))
           for m, deps in graph.items() if m == package or m.startswith(package + ".")}
    assert not {m: d for m, d in bad.items() if d}, f"{package} imports what it must not: {bad}"


def test_no_dunder_import_registries():
    offenders = [p for p in _modules().values() if "__import__(" in open(p).read()]
    assert not offenders, offenders
