"""The structure gate (scripts/test.sh runs it beside ruff and mypy): no import circle, no module over 600 lines.

    python scripts/check_structure.py                 # bgremove/, the limit of 600 lines
    python scripts/check_structure.py PKG --max-lines N

Import circles are found on grimp's import graph (the engine of import-linter): every import counts, those inside
functions and under TYPE_CHECKING included, since a circle hidden in a function is still two modules that cannot
be understood apart. A circle is a strongly connected set of modules; each is shown as one loop with the line of
every import in it. Exit status 1 lists every problem; 0 prints a one-line summary.

A gate rather than a test: it reads the source, which tests never do, and it judges the tree as a whole.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 600


def import_circles(package: Path) -> list[str]:
    """One line per circle: `a -> b -> a (a.py:3, b.py:10)`."""
    sys.path.insert(0, str(package.parent))
    graph = grimp.build_graph(package.name, cache_dir=None)
    imports = {module: graph.find_modules_directly_imported_by(module) for module in graph.modules}
    problems = []
    for members in sorted(sorted(group) for group in strongly_connected(imports) if len(group) > 1):
        first = members[0]
        second = min(imports[first] & set(members))
        chain = graph.find_shortest_chain(importer=second, imported=first)
        assert chain is not None  # both are in one strongly connected set
        loop = [first, *chain]
        lines = []
        for importer, imported in itertools.pairwise(loop):
            details = graph.get_import_details(importer=importer, imported=imported)
            where = ",".join(str(detail["line_number"]) for detail in details) or "?"
            lines.append(f"{importer}:{where}")
        also = f"; the circle also holds {', '.join(sorted(set(members) - set(loop)))}" if len(members) > len(loop) - 1 else ""
        problems.append(f"import circle: {' -> '.join(loop)} ({', '.join(lines)}){also}")
    return problems


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components, iterative (no recursion limit on a deep chain)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph.get(successor, ())))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    group = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.add(member)
                        if member == node:
                            break
                    groups.append(group)
    return groups


def long_modules(package: Path, max_lines: int) -> list[str]:
    """One line per module over the limit, longest first."""
    sizes = [(len(path.read_text(encoding="utf-8").splitlines()), path) for path in package.rglob("*.py")]
    return [
        f"{path.relative_to(package.parent).as_posix()} has {count} lines (the limit is {max_lines}): split it by concept"
        for count, path in sorted(sizes, key=lambda size: (-size[0], size[1]))
        if count > max_lines
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", nargs="?", type=Path, default=ROOT / "bgremove", help="the package folder (default: bgremove)")
    parser.add_argument("--max-lines", type=int, default=MAX_LINES, help=f"the longest module allowed (default: {MAX_LINES})")
    args = parser.parse_args(argv)
    package = args.package.resolve()
    problems = import_circles(package) + long_modules(package, args.max_lines)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    modules = len(list(package.rglob("*.py")))
    print(f"{package.name}: {modules} modules, no import circle, none over {args.max_lines} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
