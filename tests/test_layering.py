"""Architecture rules checked on the source with ``ast`` (STYLE.md sections 2, 5 and 8)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sms_sim"

# Lowest first; a module may import its own layer or lower ones. Keys are module paths
# relative to the package ("engine.contract"); a package's __init__ is its own path.
LAYERS: dict[str, int] = {
    "errors": 0, "model": 0,
    "config": 1,
    "clock": 2, "policy": 2, "stats": 2, "generate": 2, "report": 2, "output": 2,
    "pipeline": 3, "des": 3,
    "des_state": 3, "des_burst": 3, "des_general": 3, "theory": 2, "plan": 4,
    "engine": 3, "engine.contract": 3, "engine.dispatcher": 3, "engine.transport": 3,
    "engine.worker": 3, "engine.service": 3,
    "stores": 4, "stores.memory": 4, "stores.sqlite": 4, "stores.postgres": 4,
    "stores.common": 4, "stores.sqlite_schema": 4, "stores.sqlite_rows": 4,
    "cli_support": 5, "cli_model": 5, "cli": 5, "cli_plan": 5, "cli_dispatch": 5,
    "cli_worker": 5, "api": 5,
    "__main__": 6, "__init__": 6,
}
TIME_READERS = {("time", "time"), ("time", "monotonic"), ("time", "sleep"),
                ("time", "perf_counter"), ("datetime", "now"), ("datetime", "utcnow")}


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _as_layer_key(dotted: str) -> str:
    """'sms_sim.dispatch.contract' -> 'engine.contract'; 'sms_sim' -> '__init__'."""
    rest = dotted.split(".", 1)
    return rest[1] if len(rest) > 1 else "__init__"


def sms_sim_imports(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sms_sim"):
            found.append(_as_layer_key(node.module))
        elif isinstance(node, ast.Import):
            found.extend(_as_layer_key(a.name) for a in node.names
                         if a.name.startswith("sms_sim."))
    return found


def test_every_module_has_a_layer() -> None:
    assert {module_name(p) for p in modules()} <= set(LAYERS)


@pytest.mark.parametrize("path", modules(), ids=module_name)
def test_no_upward_imports(path: Path) -> None:
    own = LAYERS[module_name(path)]
    for imported in sms_sim_imports(ast.parse(path.read_text())):
        assert LAYERS[imported] <= own, f"{path.name} imports higher layer {imported}"


@pytest.mark.parametrize("path", modules(), ids=module_name)
def test_only_clock_reads_time(path: Path) -> None:
    if module_name(path) == "clock":
        return
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            assert (node.value.id, node.attr) not in TIME_READERS, f"{path.name}: {node.attr}"
        if isinstance(node, ast.ImportFrom) and node.module in {"time", "datetime"}:
            names = {a.name for a in node.names}
            assert not names & {"time", "monotonic", "sleep", "perf_counter"}, path.name


@pytest.mark.parametrize("path", modules(), ids=module_name)
def test_no_module_level_random_and_print_only_in_cli(path: Path) -> None:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "random":
                assert node.attr in {"Random", "SystemRandom"}, f"{path.name}: random.{node.attr}"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id == "print":
                assert module_name(path).startswith("cli"), f"print in {path.name}"


@pytest.mark.parametrize("path", modules(), ids=module_name)
def test_every_public_module_declares_all(path: Path) -> None:
    if path.name in {"__main__.py"}:
        return
    tree = ast.parse(path.read_text())
    targets = [t.id for node in tree.body if isinstance(node, ast.Assign)
               for t in node.targets if isinstance(t, ast.Name)]
    assert "__all__" in targets, path.name
