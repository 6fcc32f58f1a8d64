"""The imports point one way (issue 16): no circle between two files or two packages of
``nlc`` and ``benchmarks``, read from the source with :mod:`ast` (an import inside a function
counts too: it hides a circle, it does not remove it)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> nx.DiGraph:
    """``a -> b`` where module ``a`` imports module ``b`` (both in the repository). Importing a
    package's submodule by ``from package import sub`` is an edge to ``sub`` only; an edge to
    one of the importer's own parent packages is left out (Python runs those first anyway)."""
    files = [*ROOT.glob("nlc/**/*.py"), *ROOT.glob("benchmarks/*.py")]
    modules = {module_name(p): p for p in files}
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules]
                targets = subs if len(subs) == len(node.names) else [base, *subs]
            else:
                continue
            graph.add_edges_from((name, t) for t in targets
                                 if t in modules and t != name and not name.startswith(t + "."))
    return graph


def package_graph(files: nx.DiGraph) -> nx.DiGraph:
    """The same edges between the packages one level below the top (``nlc.graph``, ``nlc.spec``)."""
    graph = nx.DiGraph()
    for a, b in files.edges:
        pa, pb = ".".join(a.split(".")[:2]), ".".join(b.split(".")[:2])
        if pa != pb:
            graph.add_edge(pa, pb)
    return graph


def test_the_graph_sees_imports() -> None:
    """The reader finds the edges it must (else an empty graph would pass the tests below)."""
    graph = import_graph()
    assert graph.has_edge("nlc.graph.validate", "nlc.graph.checks")
    assert graph.has_edge("nlc.compiler", "nlc.graph.validate")
    assert graph.has_edge("benchmarks._rules", "benchmarks._flops")
    assert ("nlc.spec.load", "nlc.graph.checks") not in graph.edges


def test_the_architecture_picture_says_what_the_code_does() -> None:
    """docs/architecture.md's arrows reach exactly the packages the code's imports reach."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    arrows = re.findall(r"^ +(\w+) --> (\w+)$", text, flags=re.M)  # the mermaid block's lines
    drawn = nx.DiGraph((f"nlc.{a}", f"nlc.{b}") for a, b in arrows)
    code = package_graph(import_graph())
    code = code.subgraph(n for n in code if n.startswith("nlc.")).copy()
    missing = set(nx.transitive_closure(code).edges) - set(nx.transitive_closure(drawn).edges)
    extra = set(nx.transitive_closure(drawn).edges) - set(nx.transitive_closure(code).edges)
    assert not missing and not extra, f"redraw docs/architecture.md: missing {sorted(missing)}, not in the code {sorted(extra)}"


@pytest.mark.parametrize("level", ["files", "packages"])
def test_no_import_circles(level: str) -> None:
    graph = import_graph()
    graph = graph if level == "files" else package_graph(graph)
    cycles = sorted(nx.simple_cycles(graph), key=len)[:5]
    assert not cycles, f"import circles between {level}: {cycles}"


def test_the_api_names_are_functions_whatever_was_imported() -> None:
    """``nlc.train``, ``nlc.compile`` and ``nlc.load`` stay the functions after the packages
    behind them are imported (a package named ``nlc.train`` used to replace the function)."""
    import nlc
    import nlc.compiler
    import nlc.training.loading
    import nlc.training.loop

    assert nlc.train is nlc.training.loop.train
    assert nlc.compile is nlc.compiler.compile_spec
    assert nlc.load is nlc.training.loading.load
