"""The package's floors: imports go downward only, and the import graph has no cycle.

Floors, lowest first: _core (errors, console, io, paths, figures, version, distributed) -> data -> models ->
train -> infer -> interpret -> runs -> clean / serving -> cli. A module may import from its own floor or
below. The one documented exception is the Learner's facade methods (and `vision_learner(runs=...)`, sugar
for the RunFolder callback), which import lazily from a higher floor because that is where users look for
them; they are listed here one by one, so a new upward import fails this test until it is argued for.
"""

from __future__ import annotations

import ast
from pathlib import Path

import visiontune

ROOT = Path(visiontune.__file__).parent
FLOORS = {"_core": 0, "errors": 0, "distributed": 0, "data": 1, "models": 2, "train": 3, "infer": 4,
          "interpret": 5, "runs": 6, "clean": 7, "serving": 7, "cli": 8, "__init__": 9, "__main__": 9}

# (importing module, imported module): the facades, imported inside the method that needs them.
ALLOWED_UPWARD = {
    ("visiontune.train.api", "visiontune.infer.predict"),      # learn.get_preds(), learn.predict()
    ("visiontune.train.api", "visiontune.infer.tta"),          # learn.tta()
    ("visiontune.train.api", "visiontune.infer.export"),       # learn.export()
    ("visiontune.train.api", "visiontune.infer.onnx_export"),  # learn.export_onnx()
    ("visiontune.train.api", "visiontune.interpret"),          # learn.interpret()
    ("visiontune.train.api", "visiontune.infer.thresholds"),   # learn.tune_thresholds()
    ("visiontune.train.vision", "visiontune.runs.callback"),       # vision_learner(runs=, run_dir=, resume=)
}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def floor(module: str) -> int:
    parts = module.split(".")
    return FLOORS[parts[1]] if len(parts) > 1 else FLOORS["__init__"]


def _type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def imports_of(path: Path) -> set[str]:
    """Modules of visiontune that `path` imports anywhere (functions included), outside TYPE_CHECKING blocks."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - child.level + 1]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if target.startswith("visiontune"):
                    for alias in child.names:  # `from . import train` names a module
                        sub = f"{target}.{alias.name}"
                        out.add(sub if (ROOT.parent / Path(*sub.split("."))).exists()
                                or (ROOT.parent / (Path(*sub.split(".")).as_posix() + ".py")).exists() else target)
            elif isinstance(child, ast.Import):
                out.update(a.name for a in child.names if a.name.startswith("visiontune"))
            visit(child)

    visit(tree)
    out.discard(name)
    return out


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted(ROOT.rglob("*.py"))}


def test_imports_go_downward_only():
    upward = []
    for src, targets in graph().items():
        for dst in targets:
            if floor(dst) > floor(src) and (src, dst) not in ALLOWED_UPWARD:
                upward.append(f"{src} -> {dst}")
    assert not upward, "imports from a higher floor:\n" + "\n".join(sorted(upward))


def test_allowed_facades_are_still_used():
    g = graph()
    stale = [f"{a} -> {b}" for a, b in ALLOWED_UPWARD if b not in g.get(a, set())]
    assert not stale, f"remove these from ALLOWED_UPWARD: {stale}"


def test_import_graph_has_no_cycle():
    g = {k: {d for d in v if (k, d) not in ALLOWED_UPWARD} for k, v in graph().items()}
    # a package's __init__ importing its own modules is how packages work: not a cycle through the package
    state: dict[str, int] = {}
    cycles = []

    def dfs(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(g.get(node, ())):
            if nxt not in g:
                continue
            if state.get(nxt) == 1:
                loop = stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt]
                if not _through_own_package(loop):
                    cycles.append(" -> ".join(loop))
            elif nxt not in state:
                dfs(nxt, stack + [nxt])
        state[node] = 2

    for n in sorted(g):
        if n not in state:
            dfs(n, [n])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def _through_own_package(loop: list[str]) -> bool:
    """A submodule importing a name from its own package's __init__ (which imports the submodule) is fine."""
    for a, b in zip(loop, loop[1:]):
        if a.startswith(b + ".") or b.startswith(a + "."):
            return True
    return False


def test_learner_is_the_loop_and_little_else():
    lines = (ROOT / "train" / "learner.py").read_text().splitlines()
    assert len(lines) <= 320, f"learner.py has {len(lines)} lines"
