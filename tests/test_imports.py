"""The package's import structure: no import cycles, and no module importing a layer above
its own (the pipeline reads bottom to top: basics, models/hardware/policy, data/training/
quantization, checkpoints/costing/evaluation, search, finishing/export/report, CLI). Read
from the source (every ``import`` statement, also those inside functions, except under
``TYPE_CHECKING``), so a lazy import cannot hide a cycle."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"

LAYERS = [
    [
        "haq",
        "haq.errors",
        "haq.options",
        "haq.specs",
        "haq.textfmt",
        "haq.hostmem",
        "haq.fileio",
        "haq.runlock",
        "haq.plugins",
    ],
    ["haq.layers", "haq.policy", "haq.imagefolder", "haq.weights", "haq.hardware", "haq.models"],
    ["haq.data", "haq.train", "haq.quant"],
    ["haq.checkpoint", "haq.costing", "haq.pretrain", "haq.evaluation"],
    ["haq.search"],
    ["haq.finishing", "haq.export", "haq.report"],
    ["haq.cli_options", "haq.cli"],
]


def _modules() -> dict[str, Path]:
    mods = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text())
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for n in ast.walk(node)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            found |= {
                f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names
            }
    return {m for m in found if m in mods and m != name}


def _layer(module: str) -> int:
    best = None
    for rank, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (
                best is None or len(p) > len(best[1])
            ):
                best = (rank, p)
    assert best is not None, f"{module} has no layer in tests/test_imports.py"
    return best[0]


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: _imports(m, p, mods) for m, p in mods.items()}


def test_no_module_imports_a_layer_above_it():
    bad = [
        f"{m} (layer {_layer(m)}) imports {d} (layer {_layer(d)})"
        for m, deps in _graph().items()
        for d in deps
        if _layer(d) > _layer(m)
    ]
    assert not bad, "\n".join(sorted(bad))


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for d in sorted(graph[m]):
            assert state.get(d) != 1, "import cycle: " + " -> ".join([*path[path.index(d) :], d])
            if d not in state:
                visit(d)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_the_checker_sees_a_cycle_and_a_layer_violation(tmp_path):
    """The checker itself: a lazy import inside a function is an edge like any other."""
    (tmp_path / "a.py").write_text("def f():\n    from haq.cli import main\n")
    assert _imports("haq.errors", tmp_path / "a.py", {"haq.cli": Path()}) == {"haq.cli"}
    assert _layer("haq.cli") > _layer("haq.errors")
