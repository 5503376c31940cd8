"""The import graph of `fields/`: no cycles (deferred imports included) and layers that point down.

The graph is built from the source with `ast`, never by importing, so a cycle that only bites
when a function runs (a function-level import) is found too. Edges:

- `import fields.a.b` -> `fields.a` (its `__init__` runs) and `fields.a.b`;
- `from fields.a import b` -> `fields.a`, and `fields.a.b` when `b` is a submodule;
- relative imports are resolved against the importing module;
- `importlib.import_module("...")` is no edge: the kind registry loads kinds by name on purpose;
- an edge to one of the importer's own packages is dropped: Python has already started
  running that `__init__` before the importer runs, so it is no dependency of the importer.

Imports under `if TYPE_CHECKING:` never run, so they make no edge of the cycle graph; the layer
test counts them all the same (a type-only import of a kind from below is still a layer error).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fields"

KINDS = ("fields.nerf", "fields.sdf", "fields.inr", "fields.flow", "fields.pinn",
         "fields.dynamic")
# Modules and packages below the kinds: none of them may import a kind.
LOWER = (
    "fields.nn",
    "fields.render",
    "fields.data",
    "fields.train",
    "fields.checkpoint",
    "fields.io",
    "fields.config",
    "fields.mesh",
    "fields.metrics",
    "fields.viewer",
    "fields.capture",
)


def module_name(path: Path, root: Path = ROOT) -> str:
    """The dotted module name of a file under `root/fields/` (a package is its `__init__.py`)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_modules() -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, type_checking: bool = False) -> Iterator[tuple[ast.stmt, bool]]:
    """Every import statement at any depth (functions, classes, branches), with whether it
    sits under `if TYPE_CHECKING:`."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, type_checking
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                yield from _imports(ast.Module(body=[child], type_ignores=[]), True)
            for child in node.orelse:
                yield from _imports(ast.Module(body=[child], type_ignores=[]), type_checking)
        else:
            yield from _imports(node, type_checking)


def _with_packages(name: str, modules: dict[str, Path]) -> list[str]:
    """`fields.a.b` -> the modules that importing it runs: `fields.a`, `fields.a.b` (those that
    exist; `fields` itself included)."""
    parts = name.split(".")
    return [m for m in (".".join(parts[: i + 1]) for i in range(len(parts))) if m in modules]


def import_edges(modules: dict[str, Path], include_type_checking: bool) -> dict[str, set[str]]:
    """The import graph: module -> the `fields` modules it imports, at any depth."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        own = set(_with_packages(name, modules)[:-1]) if not is_package else set(
            _with_packages(name, modules)
        )
        targets: set[str] = set()
        tree = ast.parse(path.read_text(), filename=str(path))
        for node, type_checking in _imports(tree):
            if type_checking and not include_type_checking:
                continue
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == "fields" or alias.name.startswith("fields."):
                        targets.update(_with_packages(alias.name, modules))
                continue
            assert isinstance(node, ast.ImportFrom)
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if not (source == "fields" or source.startswith("fields.")):
                continue
            targets.update(_with_packages(source, modules))
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                if sub in modules:
                    targets.add(sub)
        graph[name] = {t for t in targets if t != name and t not in own}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each with one
    cycle through it spelled out: `[a, b, c, a]`."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)

    cycles = []
    for component in components:
        members = set(component)
        start = component[0]
        # Shortest path from start back to start inside the component (breadth first).
        parent: dict[str, str] = {}
        frontier = [start]
        found = None
        while frontier and found is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v] & members):
                    if w == start:
                        found = v
                        break
                    if w not in parent:
                        parent[w] = v
                        nxt.append(w)
                if found is not None:
                    break
            frontier = nxt
        path = [start]
        v = found
        while v is not None and v != start:
            path.insert(1, v)
            v = parent.get(v)
        cycles.append([*path, start])
    return cycles


def _under(name: str, prefixes: tuple[str, ...]) -> str | None:
    for prefix in prefixes:
        if name == prefix or name.startswith(prefix + "."):
            return prefix
    return None


def test_graph_sees_deferred_and_submodule_imports(tmp_path: Path) -> None:
    """The walker finds imports inside functions, `from pkg import submodule`, relative
    imports, and ignores `importlib.import_module` strings."""
    pkg = tmp_path / "fields"
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("from fields.a.b import thing\n")
    (pkg / "a" / "b.py").write_text("def f():\n    from fields import c\n\nthing = 1\n")
    (pkg / "a" / "d.py").write_text("from . import b\nfrom .b import thing\n")
    (pkg / "c.py").write_text(
        "import importlib\nimportlib.import_module('fields.a')\n"
        "if TYPE_CHECKING:\n    import fields.a.d\n"
        "def g():\n    import fields.a.b\n"
    )
    modules = {module_name(p, tmp_path): p for p in sorted(pkg.rglob("*.py"))}
    graph = import_edges(modules, include_type_checking=False)
    typed = import_edges(modules, include_type_checking=True)
    assert graph["fields.a.b"] == {"fields.c"}
    assert graph["fields.a"] == {"fields.a.b"}
    assert graph["fields.a.d"] == {"fields.a.b"}
    assert graph["fields.c"] == {"fields.a", "fields.a.b"}
    assert typed["fields.c"] == {"fields.a", "fields.a.b", "fields.a.d"}
    cycles = find_cycles(graph)
    assert len(cycles) == 1 and cycles[0][0] == cycles[0][-1]
    assert set(cycles[0]) == {"fields.a", "fields.a.b", "fields.c"}


def test_no_import_cycles() -> None:
    """No cycle in the import graph of `fields/`, function-level imports included."""
    graph = import_edges(source_modules(), include_type_checking=False)
    cycles = find_cycles(graph)
    assert not cycles, "import cycles in fields/:\n" + "\n".join(
        "  " + " -> ".join(c) for c in cycles
    )


def test_layers_point_down() -> None:
    """Nothing below the kinds imports a kind, and no kind imports another kind."""
    graph = import_edges(source_modules(), include_type_checking=True)
    wrong = []
    for name, targets in sorted(graph.items()):
        lower = _under(name, LOWER)
        own_kind = _under(name, KINDS)
        for target in sorted(targets):
            kind = _under(target, KINDS)
            if kind is None:
                continue
            if lower is not None:
                wrong.append(f"{name} (below the kinds) imports {target}")
            elif own_kind is not None and kind != own_kind:
                wrong.append(f"{name} (kind {own_kind}) imports {target} (kind {kind})")
    assert not wrong, "layer errors:\n  " + "\n  ".join(wrong)


# -- one place per concept --

# name defined (def or class) -> the one module that defines it
ONE_HOME = {
    "_warn_once": None,  # gone: `fields.nn.backend.warn_once` is the only one
    "warn_once": "fields.nn.backend",
    "select_backend": "fields.nn.backend",
    "count_parameters": "fields.nn.modules",
    "dataclass_from_dict": "fields.config",
    "config_from_dict": None,
    "_unknown_key_error": None,
    "hash_grid_config": "fields.nn.encoding_config",
    "RayBatcher": "fields.render.rays",
    "LockedTask": "fields.viewer.training",
    "read_ply": "fields.data.pointclouds",
    "write_ply": "fields.data.pointclouds",
    "mlp_reference": "fields.nn.mlp_reference",
    "grid_reference": "fields.nn.grid_reference",
}
# Second copies other changes of issue 20 remove (fields.pinn is another worker's).
PENDING: set[tuple[str, str]] = set()


def test_each_concept_is_defined_once() -> None:
    """Every name of `ONE_HOME` is defined (a module-level def or class) in its one module."""
    homes: dict[str, set[str]] = {name: set() for name in ONE_HOME}
    for module, path in source_modules().items():
        for node in ast.parse(path.read_text(), filename=str(path)).body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name in homes:
                homes[node.name].add(module)
    wrong = []
    for name, home in ONE_HOME.items():
        found = {m for m in homes[name] if (name, m) not in PENDING}
        want = set() if home is None else {home}
        if found != want:
            wrong.append(f"{name}: defined in {sorted(found) or 'nowhere'}, expected "
                         f"{sorted(want) or 'nowhere'}")
    assert not wrong, "\n".join(wrong)


def test_backend_selection_rules() -> None:
    """`select_backend`: a backend asked for by name runs or raises naming the module and
    why; "auto" takes the kernels when they can run the call, else the reference, with one
    warning per reason unless the input asked for the reference (a non-float32 CPU tensor)."""
    import warnings

    import pytest
    import torch

    from fields.nn.backend import check_backend, forget_warnings, select_backend

    x32, x64 = torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.float64)

    def fine() -> str:
        return ""

    def no_cpu() -> str:
        return "no CPU kernels here"

    def no_cuda(auto: bool) -> str:
        return "no CUDA kernels here"

    assert select_backend("Thing", "torch", x32, no_cpu, no_cuda) == "torch"
    assert select_backend("Thing", "cpu", x32, fine, no_cuda) == "cpu"
    assert select_backend("Thing", "auto", x32, fine, no_cuda) == "cpu"
    assert select_backend("Thing", "cuda", x32, no_cpu, lambda auto: "") == "cuda"
    with pytest.raises(ValueError, match="Thing: backend='cpu' cannot run this call: no CPU"):
        select_backend("Thing", "cpu", x32, no_cpu, no_cuda)
    with pytest.raises(ValueError, match="Thing: backend='cuda' cannot run this call: no CUDA"):
        select_backend("Thing", "cuda", x32, fine, no_cuda)
    with pytest.raises(ValueError, match="Thing: unknown backend 'vulkan'; expected one of "
                                         "auto, torch, cpu, cuda"):
        check_backend("Thing", "vulkan")
    forget_warnings()
    with pytest.warns(UserWarning, match=r"Thing\(backend='auto'\): running on the torch "
                                         "reference because no CPU kernels here"):
        assert select_backend("Thing", "auto", x32, no_cpu, no_cuda) == "torch"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per reason; float64 asked for the reference
        assert select_backend("Thing", "auto", x32, no_cpu, no_cuda) == "torch"
        forget_warnings()
        assert select_backend("Thing", "auto", x64, no_cpu, no_cuda) == "torch"


def test_kernel_modules_share_the_backend_selection() -> None:
    """FusedMLP, the grid encodings and OccupancyGrid.sample take the same backend names and
    warn through the one `warn_once` (no module keeps its own)."""
    import pytest
    import torch

    from fields.nn import FusedMLP, HashGrid
    from fields.nn.backend import BACKENDS, forget_warnings
    from fields.render.occupancy import OccupancyGrid

    for make in (lambda b: FusedMLP(3, 1, 16, 1, backend=b),
                 lambda b: HashGrid(3, n_levels=2, log2_hashmap_size=8, backend=b),
                 lambda b: OccupancyGrid([0, 0, 0, 1, 1, 1], 4).sample(
                     torch.zeros(1, 3), torch.ones(1, 3), 0.0, 1.0, 0.1, backend=b)):
        with pytest.raises(ValueError, match="unknown backend 'vulkan'; expected one of "
                                             + ", ".join(BACKENDS)):
            make("vulkan")
    forget_warnings()
    with pytest.warns(UserWarning, match=r"FusedMLP\(backend='auto'\): running on the torch "
                                         "reference because width 40"):
        FusedMLP(3, 1, 40, 1)(torch.zeros(4, 3))


def test_every_public_function_and_class_has_a_docstring():
    """Module-level public functions and classes under fields/ (typing overloads and the PDE
    problem scripts, which are examples read as a whole, excepted)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "fields"
    missing = []
    for path in sorted(root.rglob("*.py")):
        if "scenes/pde" in path.as_posix():
            continue
        for node in ast.parse(path.read_text()).body:
            if not isinstance(node, (ast.FunctionDef, ast.ClassDef)) or node.name[0] == "_":
                continue
            if any(getattr(d, "id", getattr(d, "attr", "")) == "overload"
                   for d in getattr(node, "decorator_list", [])):
                continue
            if not ast.get_docstring(node):
                missing.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name}")
    assert not missing, "no docstring: " + ", ".join(missing)
