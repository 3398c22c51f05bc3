"""Architecture rules checked on the source with ``ast`` (STYLE.md sections 2, 5 and 8).

The layers, lowest first: the core (the package's top-level modules), ``sim``, ``dispatch``,
then the edges ``cli`` and ``api``. Each package may import what ``ALLOWED`` lists for it,
stated per package rather than per module, so a new module needs no entry here. On top of
that: nothing outside ``dispatch/stores`` names a concrete store (only the edges may import
from ``dispatch.stores``, and only its functions of a store URL: ``open_store``,
``is_transient``, ``migrate_store``, ``display_url`` and ``copy_database``), and no import
cycle anywhere. The checks run on a directory, so the tests can show them failing on a
deliberately broken copy.
"""

from __future__ import annotations

import ast
import graphlib
import shutil
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sms_sim"

# Package -> the prefixes it may import ("core" = any top-level module of sms_sim).
# ``dispatch`` may use ``sim.threaded`` (the worker runs the sender pool); ``sim`` never
# imports ``dispatch``; the edges assemble everything; ``facade`` is ``sms_sim/__init__``.
ALLOWED: dict[str, tuple[str, ...]] = {
    "core": ("core",),
    "sim": ("core", "sim"),
    "dispatch": ("core", "sim.threaded", "dispatch"),
    "api": ("core", "sim", "dispatch", "api"),
    "cli": ("core", "sim", "dispatch", "api", "cli"),
    "facade": ("core", "sim"),
    "__main__": ("cli",),
}
STORES = "dispatch.stores"
# What an edge may take from STORES.
URL_FUNCTIONS = frozenset({"open_store", "is_transient", "migrate_store",
                           "display_url", "copy_database", "check_store_url"})
EDGES = ("cli", "api")
TIME_READERS = {("time", "time"), ("time", "monotonic"), ("time", "sleep"),
                ("time", "perf_counter"), ("datetime", "now"), ("datetime", "utcnow")}


def modules(root: Path = PACKAGE) -> list[Path]:
    return sorted(root.rglob("*.py"))


def module_name(path: Path, root: Path = PACKAGE) -> str:
    """'dispatch/stores/memory.py' -> 'dispatch.stores.memory'; a package's __init__ is the
    package; the root __init__ is ''."""
    parts = path.relative_to(root).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def package_of(name: str) -> str:
    if name == "":
        return "facade"
    first = name.split(".")[0]
    return first if first in ALLOWED and first != "core" else "core"


def _matches(name: str, prefix: str) -> bool:
    if prefix == "core":
        return package_of(name) == "core"
    return name == prefix or name.startswith(prefix + ".")


def imported_names(path: Path, root: Path = PACKAGE) -> list[tuple[str, str | None]]:
    """``(module, name)`` for every import of the package in ``path`` (lazy ones too), the
    module resolved to its file: ``from sms_sim.cli import simulate`` is ('cli.simulate',
    None), ``from sms_sim.dispatch.stores import open_store`` ('dispatch.stores',
    'open_store'). Relative imports count as well."""
    found: list[tuple[str, str | None]] = []
    package = module_name(path, root) if path.name == "__init__.py" else \
        module_name(path, root).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against this module's package
                parts = package.split(".") if package else []
                parts = parts[:len(parts) - (node.level - 1)]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            elif node.module == "sms_sim" or (node.module or "").startswith("sms_sim."):
                base = (node.module or "").removeprefix("sms_sim").removeprefix(".")
            else:
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}" if base else alias.name
                found.append((sub, None) if _is_module(sub, root) else (base, alias.name))
        elif isinstance(node, ast.Import):
            found.extend((a.name.removeprefix("sms_sim."), None) for a in node.names
                         if a.name.startswith("sms_sim."))
    return found


def imports_of(path: Path, root: Path = PACKAGE) -> list[str]:
    """The package's modules that ``path`` imports."""
    return [module for module, _ in imported_names(path, root)]


def _is_module(name: str, root: Path) -> bool:
    path = root.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def violations(root: Path = PACKAGE) -> list[str]:
    """Every import that breaks a layer rule or names a concrete store, one line each."""
    found = []
    for path in modules(root):
        name = module_name(path, root)
        package = "__main__" if name == "__main__" else package_of(name)
        for target, imported in imported_names(path, root):
            if not any(_matches(target, prefix) for prefix in ALLOWED[package]):
                found.append(f"{name or 'sms_sim'} ({package}) imports {target}")
            elif _matches(target, STORES) and not _matches(name, STORES) and (
                    target != STORES or package not in EDGES or imported not in URL_FUNCTIONS):
                what = f"{target}.{imported}" if target == STORES else target
                found.append(f"{name} names a concrete store: {what}")
    return found


def import_cycle(root: Path = PACKAGE) -> tuple[str, ...] | None:
    """One import cycle among the package's modules, or None."""
    graph = {module_name(p, root): set(imports_of(p, root)) for p in modules(root)}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        return tuple(exc.args[1])
    return None


def test_no_upward_import_and_no_concrete_store_outside_the_stores() -> None:
    assert violations() == []


def test_no_import_cycle() -> None:
    assert import_cycle() is None


def _broken_copy(tmp_path: Path) -> Path:
    root = tmp_path / "sms_sim"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_the_rules_fail_on_an_upward_import(tmp_path: Path) -> None:
    root = _broken_copy(tmp_path)
    model = root / "model.py"
    model.write_text(model.read_text() + "\nfrom sms_sim.dispatch import worker\n")
    policy = root / "sim" / "plan.py"
    policy.write_text(policy.read_text() + "\nfrom sms_sim.dispatch.stores import memory\n")
    found = violations(root)
    assert "model (core) imports dispatch.worker" in found
    assert "sim.plan (sim) imports dispatch.stores.memory" in found


def test_the_rules_fail_on_a_concrete_store_named_outside_the_stores(tmp_path: Path) -> None:
    root = _broken_copy(tmp_path)
    service = root / "dispatch" / "worker.py"
    service.write_text(service.read_text() + "\nfrom sms_sim.dispatch.stores.memory import x\n")
    assert "dispatch.worker names a concrete store: dispatch.stores.memory" in violations(root)


def test_an_edge_may_take_open_store_and_nothing_else_from_the_stores(tmp_path: Path) -> None:
    root = _broken_copy(tmp_path)
    worker = root / "cli" / "worker.py"
    worker.write_text(worker.read_text() + "\nfrom sms_sim.dispatch.stores import SqliteStore\n"
                      "from ..dispatch.stores.memory import MemoryStore\n")
    found = violations(root)
    assert "cli.worker names a concrete store: dispatch.stores.SqliteStore" in found
    assert "cli.worker names a concrete store: dispatch.stores.memory" in found
    assert not [line for line in found if "open_store" in line]


def test_the_rules_fail_on_a_cycle(tmp_path: Path) -> None:
    root = _broken_copy(tmp_path)
    stats = root / "stats.py"  # report imports stats; the reverse closes a loop in the core
    stats.write_text(stats.read_text() + "\nimport sms_sim.report\n")
    cycle = import_cycle(root)
    assert cycle is not None and {"stats", "report"} <= set(cycle)


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
            if node.func.id == "print":  # __main__: the CLI's entry, which loads it
                assert module_name(path).startswith("cli") or module_name(path) == "__main__", \
                    f"print in {path.name}"


@pytest.mark.parametrize("path", modules(), ids=module_name)
def test_every_public_module_declares_all(path: Path) -> None:
    if path.name in {"__main__.py"}:
        return
    tree = ast.parse(path.read_text())
    targets = [t.id for node in tree.body if isinstance(node, ast.Assign)
               for t in node.targets if isinstance(t, ast.Name)]
    targets += [node.target.id for node in tree.body
                if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)]
    assert "__all__" in targets, path.name
