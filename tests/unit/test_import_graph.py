"""The import graph of `pipeline/` and `scorers/`, read from the source (ast, nothing is imported).

Every import counts, those inside functions too, except the ones under `if TYPE_CHECKING:`. The graph
has no cycle; `scorers` imports of the pipeline only its leaves; the leaves import only leaves;
`settings.py` imports nothing of the pipeline; the SDK imports only the leaves and `kafka_security`.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pipeline", "scorers")
LEAVES = ("pipeline.contracts", "pipeline.errors", "pipeline.sampling", "pipeline.topics")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return ((isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
            or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _known(name: str) -> str | None:
    """The module of ours `name` is, or is inside of (an attribute of a module), or None."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    """The modules of ours that `module` imports, outside `if TYPE_CHECKING:` blocks."""
    path = MODULES[module]
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for other in child.orelse:
                    visit_node(other)
                continue
            visit_node(child)

    def visit_node(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.update(filter(None, (_known(alias.name) for alias in node.names)))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package[:len(package) - (node.level - 1)]
                base = ".".join([*parent, base] if base else parent)
            for alias in node.names:  # `from pipeline import topics` imports the module pipeline.topics
                target = _known(f"{base}.{alias.name}") if f"{base}.{alias.name}" in MODULES else _known(base)
                if target:
                    found.add(target)
        visit(node)

    visit(ast.parse(path.read_text(), str(path)))
    found.discard(module)
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def is_leaf(module: str) -> bool:
    return any(module == leaf or module.startswith(leaf + ".") for leaf in LEAVES)


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for start, edges_of_start in graph.items():
        if start in index:
            continue
        work = [(start, iter(sorted(edges_of_start)))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(component)
    return found


def test_the_walker_sees_imports_and_skips_type_checking_ones() -> None:
    assert len(MODULES) > 150 and "scorers.judges.client" in MODULES and "pipeline.contracts" in MODULES
    assert {"pipeline.settings", "pipeline.topics", "pipeline.scoring.resolvers"} <= GRAPH["pipeline.worker.app"]
    assert "pipeline.sdk.llm" in GRAPH["pipeline.sdk.tracer"]  # an import inside a method counts
    assert "pipeline.settings" not in GRAPH["pipeline.kafka_security"]  # only under TYPE_CHECKING there
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_no_import_cycles() -> None:
    new = [sorted(c) for c in cycles(GRAPH)]
    assert new == [], f"import cycles (break them; TYPE_CHECKING imports do not count): {new}"


def test_scorers_import_only_the_leaves_of_the_pipeline() -> None:
    wrong = {m: sorted(d for d in deps if d.startswith("pipeline") and not is_leaf(d))
             for m, deps in GRAPH.items() if m.startswith("scorers")}
    assert {m: d for m, d in wrong.items() if d} == {}, f"scorers may import only {', '.join(LEAVES)}"


def test_the_leaves_import_only_leaves_and_settings_nothing_of_the_pipeline() -> None:
    wrong = {m: sorted(d for d in deps if not is_leaf(d)) for m, deps in GRAPH.items() if is_leaf(m)}
    assert {m: d for m, d in wrong.items() if d} == {}
    assert GRAPH["pipeline.settings"] == set()
    assert GRAPH["pipeline.kafka_security"] <= {"pipeline.errors"}


def test_the_sdk_imports_only_the_leaves_and_kafka_security() -> None:
    wrong = {m: sorted(d for d in deps if not (is_leaf(d) or d.startswith("pipeline.sdk")
                                               or d == "pipeline.kafka_security"))
             for m, deps in GRAPH.items() if m.startswith("pipeline.sdk")}
    assert {m: d for m, d in wrong.items() if d} == {}
