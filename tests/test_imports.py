"""The search package has no import cycle, hidden or not: its import graph, read from the source, is acyclic,
and no module of it imports cellsearch inside a function (the way a cycle hides)."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cellsearch"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(path: Path) -> list[tuple[str, bool]]:
    """(cellsearch module imported, whether inside a function) for each import outside ``if TYPE_CHECKING``."""
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return  # for type hints only: not run
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cellsearch"):
            for alias in node.names:  # ``from pkg import submodule`` imports the submodule
                name = f"{node.module}.{alias.name}"
                found.append((name if name in MODULES else node.module, in_function))
        elif isinstance(node, ast.Import):
            found.extend((a.name, in_function) for a in node.names if a.name.startswith("cellsearch"))
        for child in ast.iter_child_nodes(node):
            visit(child, in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(ast.parse(path.read_text()), False)
    return found


def test_the_search_package_imports_nothing_of_cellsearch_inside_a_function():
    hidden = [(name, target) for name, path in MODULES.items() if name.startswith("cellsearch.search")
              for target, in_function in imports(path) if in_function]
    assert hidden == []


def test_the_search_package_has_no_import_cycle():
    graph = {name: {t for t, _ in imports(path) if t in MODULES} for name, path in MODULES.items()}
    cycles = []

    def walk(name: str, stack: list[str]) -> None:
        if name in stack:
            cycle = stack[stack.index(name):]
            if any(m.startswith("cellsearch.search") for m in cycle):
                cycles.append(cycle)
            return
        if name in done:
            return
        for target in sorted(graph[name]):
            walk(target, stack + [name])
        done.add(name)

    done: set[str] = set()
    for name in sorted(graph):
        walk(name, [])
    assert cycles == []
    # the loop knows neither the DARTS driver nor the final step: the dispatch above it (run.py) does
    assert not {"cellsearch.search.darts", "cellsearch.search.final", "cellsearch.search.run"} & graph[
        "cellsearch.search.loop"]
