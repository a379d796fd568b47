#!/usr/bin/env python3
"""The import rules, read from the source (AST, nothing is imported):

1. One direction between the packages: data_pipeline and experiments may import llama_jax; llama_jax imports
   neither, anywhere (module level or inside a function).
2. No import cycles among the repository's modules, counting imports inside functions too: a cycle that only
   a deferred import hides still ties the two modules together.

    python .ci/check_imports.py [ROOT]      exit 0, or 1 with one line per broken rule

ROOT defaults to the repository (this file's parent's parent). Called by `.ci/run` and `make lint`.
"""

from __future__ import annotations

import ast
import os
import sys
from collections.abc import Iterator

PACKAGES = ("llama_jax", "data_pipeline", "experiments")
FORBIDDEN = {"llama_jax": ("data_pipeline", "experiments")}  # package -> the packages it must not import
# Cycles tolerated, each a frozenset of modules: none.
ALLOWED_CYCLES: set[frozenset[str]] = set()


def modules(root: str) -> dict[str, str]:
    """Dotted module name -> file, for every .py file of PACKAGES under `root`."""
    found = {}
    for package in PACKAGES:
        for directory, dirs, files in os.walk(os.path.join(root, package)):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if name.endswith(".py"):
                    path = os.path.join(directory, name)
                    dotted = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
                    found[dotted.removesuffix(".__init__")] = path
    return found


def imports(module: str, path: str, known: dict[str, str]) -> Iterator[tuple[str, int]]:
    """(imported module of the repository, line) for every import statement of `path`, at any depth."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    is_package = path.endswith("__init__.py")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PACKAGES:
                    yield _resolve(alias.name, known), node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package
                parts = module.split(".") if is_package else module.split(".")[:-1]
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] not in PACKAGES:
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield (sub if sub in known else _resolve(base, known)), node.lineno


def _resolve(dotted: str, known: dict[str, str]) -> str:
    """The longest prefix of `dotted` that is a module of the repository (or `dotted` itself if none is)."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in known:
            return ".".join(parts[:i])
    return dotted


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (or a module importing itself), sorted."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's algorithm, iterative over each node's successors
        work = [(v, iter(sorted(graph.get(v, ()))))]
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        while work:
            node, successors = work[-1]
            for w in successors:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on_stack:
                    low[node] = min(low[node], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.append(w)
                        if w == node:
                            break
                    if len(component) > 1 or node in graph.get(node, ()):
                        out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def check(root: str) -> list[str]:
    """One line per broken rule under `root` (empty when all hold)."""
    known = modules(root)
    graph: dict[str, set[str]] = {m: set() for m in known}
    problems = []
    for module, path in sorted(known.items()):
        top = module.split(".")[0]
        for target, line in imports(module, path, known):
            if target.split(".")[0] in FORBIDDEN.get(top, ()):
                problems.append(f"{os.path.relpath(path, root)}:{line}: {top} imports {target}; "
                                f"{top} must not import {' or '.join(FORBIDDEN[top])} (move the shared fact "
                                "to llama_jax, e.g. llama_jax.corpus_spec, or load it by name)")
            if target in known and target != module:
                graph[module].add(target)
    for component in cycles(graph):
        if frozenset(component) not in ALLOWED_CYCLES:
            problems.append(f"import cycle: {' <-> '.join(component)}")
    return problems


def main(argv: list[str]) -> int:
    root = os.path.abspath(argv[1] if len(argv) > 1 else os.path.join(os.path.dirname(__file__), ".."))
    problems = check(root)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
