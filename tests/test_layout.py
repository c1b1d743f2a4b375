"""The package's layout: the import layers docs/ARCHITECTURE.md states, checked on the import graph, and
the length of its functions."""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "xinference_nb"
ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"


# ------------------------------------------------------------------ the import graph
def _package_modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name → (file, is a package ``__init__``), for every module of xinference_nb."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        modules[".".join(parts)] = (path, is_package)
    return modules


def _imports(modules: dict[str, tuple[Path, bool]]) -> dict[str, list[tuple[str, int]]]:
    """Module → [(module of ours it imports, line)]: top-level, function-level and TYPE_CHECKING
    imports, relative ones resolved; ``from pkg import name`` counts as ``pkg.name`` when that is a
    module, else as ``pkg``."""

    def known(name: str) -> str:
        while name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph: dict[str, list[tuple[str, int]]] = {}
    for name, (path, is_package) in modules.items():
        here = name if is_package else name.rpartition(".")[0]
        edges = graph.setdefault(name, [])
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")[:len(here.split(".")) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names]
            else:
                continue
            for target in targets:
                if target == "xinference_nb" or target.startswith("xinference_nb."):
                    target = known(target)
                    if target != name:
                        edges.append((target, node.lineno))
    return graph


# ------------------------------------------------------------------ the layers, as ARCHITECTURE.md lists them
_LAYER_LINE = re.compile(r"^(\d+)\. \*\*([^*]+)\*\*: (.+)$")


def _layers() -> list[tuple[str, list[str]]]:
    """[(layer name, [patterns])], lowest first, from the numbered list under "Import layers"."""
    text = ARCHITECTURE.read_text()
    assert "Import layers, lowest first" in text, "docs/ARCHITECTURE.md lost its 'Import layers, lowest first' list"
    section = text[text.index("Import layers, lowest first"):]
    section = section[:section.index("\n## ")]
    layers = []
    for line in section.splitlines():
        match = _LAYER_LINE.match(line)
        if match:
            assert int(match.group(1)) == len(layers) + 1, f"ARCHITECTURE.md layer list out of order at: {line}"
            listed = match.group(3).split(" — ")[0]
            layers.append((match.group(2), re.findall(r"`([^`]+)`", listed)))
    assert len(layers) >= 5, "ARCHITECTURE.md's layer list is unreadable (want lines '1. **name**: `module`, ...')"
    return layers


def _layer_of(module: str, layers: list[tuple[str, list[str]]]) -> tuple[int, str]:
    """(index, name) of the layer that lists ``module``: its own name first, then the longest ``x.*``."""
    short = module.partition(".")[2] or "__init__"
    best: tuple[int, int, str] | None = None  # (specificity, index, name)
    for index, (layer, patterns) in enumerate(layers):
        for pattern in patterns:
            if pattern == short:
                rank = 10_000
            elif pattern.endswith(".*") and short.startswith(pattern[:-1]):
                rank = len(pattern)
            else:
                continue
            assert best is None or rank != best[0], f"{module} is listed twice ({best[2]}, {layer})"
            if best is None or rank > best[0]:
                best = (rank, index, layer)
    assert best is not None, f"{module} is in no layer of docs/ARCHITECTURE.md: add it to the list"
    return best[1], best[2]


def test_imports_follow_the_layers():
    modules = _package_modules()
    layers = _layers()
    for _, patterns in layers:  # every listed name is a module (a stale list misleads)
        for pattern in patterns:
            name = "xinference_nb" if pattern == "__init__" else "xinference_nb." + pattern.removesuffix(".*")
            assert name in modules, f"ARCHITECTURE.md lists `{pattern}`, which is no module of xinference_nb"
    where = {name: _layer_of(name, layers) for name in modules}
    upward = []
    for name, edges in _imports(modules).items():
        for target, line in edges:
            if where[target][0] > where[name][0]:
                path = modules[name][0].relative_to(ROOT)
                upward.append(f"{path}:{line} ({where[name][1]}) imports {target} ({where[target][1]})")
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(sorted(upward))


def _cycles(graph: dict[str, list[str]]) -> list[tuple[list[str], list[str]]]:
    """(a shortest circle, every module caught in it) for each strongly connected component of more
    than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(set(component))
    circles = []
    for component in components:  # a shortest way back to the start, inside the component
        start = min(component)
        paths = {start: [start]}
        frontier = [start]
        circle = None
        while frontier and circle is None:
            following = []
            for node in frontier:
                for child in graph[node]:
                    if child == start:
                        circle = paths[node] + [start]
                        break
                    if child in component and child not in paths:
                        paths[child] = paths[node] + [child]
                        following.append(child)
                if circle:
                    break
            frontier = following
        circles.append((circle, sorted(component)))
    return circles


def test_import_graph_has_no_cycle():
    graph = {name: sorted({t for t, _ in edges}) for name, edges in _imports(_package_modules()).items()}
    circles = _cycles(graph)
    assert not circles, "import circles:\n" + "\n".join(
        f"{' → '.join(circle)} (in a knot of {len(members)}: {', '.join(members)})" for circle, members in circles)


# ------------------------------------------------------------------ function size
MAX_FUNCTION_LINES = 60


def _functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, ast.AST]]:
    """(qualified name, node) of every function in ``tree``: methods and nested functions included."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield prefix + node.name, node
            yield from _functions(node, f"{prefix}{node.name}.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")
        else:
            yield from _functions(node, prefix)


def test_no_function_over_60_lines():
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for name, node in _functions(ast.parse(path.read_text(), str(path))):
            lines = node.end_lineno - node.lineno + 1   # from `def` to the last line
            if lines > MAX_FUNCTION_LINES:
                too_long.append(f"{path.relative_to(ROOT)}:{node.lineno} {name} ({lines} lines)")
    assert not too_long, f"functions longer than {MAX_FUNCTION_LINES} lines (split them into pieces that each do " \
                         "one thing):\n" + "\n".join(too_long)


# ------------------------------------------------------------------ each fact once (ARCHITECTURE.md's table)
def _code_strings(tree: ast.AST) -> Iterator[ast.Constant]:
    """The string constants of ``tree``'s code: docstrings and other bare string statements left out."""
    prose = {id(node.value) for node in ast.walk(tree)
             if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose:
            yield node


def _where(test) -> list[str]:
    """"file:line" of every node of the package's code for which ``test(node)`` holds."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        found += [f"{path.relative_to(PACKAGE)}:{node.lineno}" for node in test(tree)]
    return found


def _strings(*values: str):
    return lambda tree: [n for n in _code_strings(tree) if n.value in values]


def _files(found: list[str]) -> set[str]:
    return {place.partition(":")[0] for place in found}


def test_each_fact_once_bnb_quantization_names():
    """The on-the-fly bitsandbytes names are spelled in one tuple (metadata/quant.py BNB_QUANTIZATIONS)."""
    def bnb_tuples(tree):
        return [n for n in ast.walk(tree) if isinstance(n, (ast.Tuple, ast.List, ast.Set)) and len(n.elts) > 1
                and any(isinstance(e, ast.Constant) and e.value == "4-bit" for e in n.elts)]
    found = _where(bnb_tuples)
    assert len(found) == 1 and _files(found) == {"metadata/quant.py"}, found


def test_each_fact_once_layer_count_keys():
    """config.json's layer-count keys: metadata/hf.py LAYER_KEYS (memory, estimate and detect read it)."""
    found = _where(_strings("n_layer", "num_layers"))
    assert _files(found) == {"metadata/hf.py"} and len(found) == 2, found


def test_each_fact_once_tool_call_tags():
    """``<tool_call>`` / ``</tool_call>``: tool_parsers.TOOL_CALL_TAGS, imported by chat."""
    found = _where(_strings("</tool_call>"))
    assert found and len(found) == 1 and _files(found) == {"chat/tool_parsers.py"}, found
    from xinference_nb import chat
    from xinference_nb.chat import tool_parsers

    assert chat.TOOL_CALL_TAGS is tool_parsers.TOOL_CALL_TAGS


def test_each_fact_once_chunk_delta():
    """Where a chunk's delta sits (``choices[0].delta``) is read in one place: chat.chunk_delta."""
    def delta_reads(tree):
        out = []
        for n in ast.walk(tree):
            if (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "get" and n.args
                    and isinstance(n.args[0], ast.Constant) and n.args[0].value == "delta"):
                out.append(n)
            elif isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Constant) and n.slice.value == "delta":
                out.append(n)
        return out
    found = _where(delta_reads)
    assert len(found) == 1 and _files(found) == {"chat/__init__.py"}, found


def test_each_fact_once_message_value_helpers():
    """Quoting a value in a message (its type, a cut repr) is errors.kind_of / shorten / short_value only."""
    def defs(tree):
        return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                and n.name in ("_kind", "_short", "_shorten", "kind_of", "shorten", "short_value")]
    found = _where(defs)
    assert _files(found) == {"errors.py"} and len(found) == 3, found

    def cut_and_dots(tree):   # text[:37] + "..." / text[: limit - 1] + "…": errors.shorten does that
        return [n for n in ast.walk(tree) if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Add)
                and isinstance(n.left, ast.Subscript) and isinstance(n.left.slice, ast.Slice)
                and isinstance(n.right, ast.Constant) and n.right.value in ("...", "…")]
    assert _where(cut_and_dots) == []


def test_each_fact_once_engine_options():
    """The options an engine reads travel with its ENGINES row; options.ENGINE_OPTIONS is derived."""
    from xinference_nb.engines import ENGINES
    from xinference_nb.engines.options import ENGINE_OPTIONS, OPTIONS, PASSTHROUGH

    assert ENGINE_OPTIONS == {(e.model_type, e.name): e.options for e in ENGINES}
    assert PASSTHROUGH == {(e.model_type, e.name): e.passthrough for e in ENGINES if e.passthrough}
    assert all(e.options and set(e.options) <= set(OPTIONS) for e in ENGINES)


def test_each_fact_once_rest_routes():
    """A handle method's REST path is written once, in model_types' table: the server's routers and
    its upload list take it from there."""
    from xinference_nb.model_types import MODEL_TYPE_TABLE

    routes = {path for row in MODEL_TYPE_TABLE for path in row.routes.values()}
    found = _where(_strings(*routes))
    assert _files(found) == {"model_types.py"}, found


def test_the_top_level_holds_at_most_ten_modules():
    """Each concern in its folder: the package's top level keeps at most 10 modules (``__init__`` included)."""
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 10, top
