"""The import contract of the package: the layer rules of docs/ARCHITECTURE.md, checked
over the AST of every module in climbd/ (imports at any depth, including the ones inside
functions; ``if TYPE_CHECKING:`` imports are left out, they never run).

Each rule is one line of :data:`RULES`: (rule, importer, forbidden import). A violation names
the module, the line and the rule it breaks.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parent.parent / "climbd"

#: The only modules that may import aiohttp: the HTTP layer, and the composition root that
#: runs its server.
AIOHTTP_MODULES = ("climbd.api", "climbd.daemon")
#: Pure modules: the standard library (and the exception tree) only.
PURE = ("climbd.errors", "climbd.ids", "climbd.statedir", "climbd.visibility")
#: Pure state machines and maths: no event loop, no threads, no clock of their own.
PURE_LOGIC = ("climbd.hardware.debounce", "climbd.ghost.pacer")
#: Services (things with a lifetime) and who may build them: the composition root, and the
#: CLI commands that run one service on their own (``climbd export``, ``climbd pair``).
SERVICES = {"Pipeline", "PoseBackfill", "Recorder", "Retention", "ExportManager", "GhostService",
            "WhepEndpoint", "MediaWorker", "AuthStore", "AttemptService", "GpioButtons",
            "MqttBridge", "Archiver"}
SERVICE_BUILDERS = ("climbd.daemon", "climbd.cli", "climbd.export.cli")


def under(name: str, *packages: str) -> bool:
    """True if module ``name`` is one of ``packages`` or inside one."""
    return any(name == p or name.startswith(p + ".") for p in packages)


Rule = tuple[str, Callable[[str], bool], Callable[[str], bool]]

RULES: list[Rule] = [
    ("only climbd.api and the composition root import aiohttp",
     lambda m: not under(m, *AIOHTTP_MODULES), lambda i: under(i, "aiohttp")),
    ("nothing below the HTTP layer imports climbd.api (only the composition root does)",
     lambda m: not under(m, "climbd.api", "climbd.daemon"), lambda i: under(i, "climbd.api")),
    ("storage does not import security (security builds on storage)",
     lambda m: under(m, "climbd.storage"), lambda i: under(i, "climbd.security")),
    ("storage imports no stage above it (recording, streaming, export, pipeline)",
     lambda m: under(m, "climbd.storage"),
     lambda i: under(i, "climbd.recording", "climbd.streaming", "climbd.export",
                     "climbd.pipeline", "climbd.ghost", "climbd.attempts")),
    ("security holds policy only: it does not import the HTTP layer",
     lambda m: under(m, "climbd.security"), lambda i: under(i, "climbd.api")),
    ("only the CLI imports the composition root",
     lambda m: m not in ("climbd.cli", "climbd.daemon"), lambda i: under(i, "climbd.daemon")),
    ("only the live view (climbd.streaming) imports aiortc/aioice",
     lambda m: not under(m, "climbd.streaming"), lambda i: under(i, "aiortc", "aioice")),
    ("pure state machines (debounce, ghost pacer) import no asyncio, threading or time",
     lambda m: m in PURE_LOGIC,
     lambda i: under(i, "asyncio", "threading", "time", "concurrent", "aiortc", "aiohttp")),
    ("pure modules import the standard library (and climbd.errors) only",
     lambda m: m in PURE,
     lambda i: not (under(i.split(".")[0], *sys.stdlib_module_names)
                    or i in ("__future__", "climbd.errors"))),
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(tree: ast.AST) -> list[ast.AST]:
    """Every node, except the bodies of ``if TYPE_CHECKING:``."""
    out: list[ast.AST] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        out.append(node)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                stack.extend(child.orelse)
                continue
            stack.append(child)
    return out


def _imports(module: str, tree: ast.AST) -> list[tuple[str, int]]:
    """(imported module, line) for every import that runs."""
    found = []
    for node in _walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")[: -node.level] if not module.endswith("__init__") \
                    else module.split(".")
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((name, node.lineno))
            # "from climbd import api" imports climbd.api
            found += [(f"{name}.{a.name}", node.lineno) for a in node.names
                      if name == "climbd"]
    return found


def _modules() -> dict[str, ast.AST]:
    mods = {_module_name(p): ast.parse(p.read_text(encoding="utf-8"), str(p))
            for p in sorted(PACKAGE.rglob("*.py"))}
    assert len(mods) > 50 and "climbd.daemon" in mods and "climbd.api.app" in mods
    return mods


MODULES = _modules()


@pytest.mark.parametrize("rule", RULES, ids=[r[0] for r in RULES])
def test_layer_rule(rule: Rule) -> None:
    text, importer, forbidden = rule
    broken = [f"{m}:{line} imports {name}"
              for m, tree in MODULES.items() if importer(m)
              for name, line in _imports(m, tree) if forbidden(name)]
    assert not broken, f"{text}:\n  " + "\n  ".join(broken)


def test_only_the_composition_root_builds_services() -> None:
    """Services are built in one place (climbd.daemon.Daemon.start), so their order and
    lifetimes are visible there; a CLI command that needs one service builds it itself."""
    broken = []
    for m, tree in MODULES.items():
        if under(m, *SERVICE_BUILDERS):
            continue
        for node in _walk(tree):
            if isinstance(node, ast.Call):
                fn = node.func
                name = fn.id if isinstance(fn, ast.Name) else (
                    fn.attr if isinstance(fn, ast.Attribute) else None)
                if name in SERVICES:
                    broken.append(f"{m}:{node.lineno} builds {name}")
    assert not broken, "services are built by climbd.daemon only:\n  " + "\n  ".join(broken)


def test_no_class_level_registries_or_module_globals_that_hold_state() -> None:
    """State lives in the objects the composition root builds: no ``global`` statements and
    no class attributes holding a mutable registry (a ``ClassVar`` dict/list/set)."""
    broken = []
    for m, tree in MODULES.items():
        for node in _walk(tree):
            if isinstance(node, ast.Global):
                broken.append(f"{m}:{node.lineno} global {', '.join(node.names)}")
            if isinstance(node, ast.ClassDef):
                for stmt in node.body:
                    if (isinstance(stmt, ast.AnnAssign) and "ClassVar" in ast.unparse(
                            stmt.annotation) and isinstance(stmt.value, ast.Dict | ast.List
                                                             | ast.Set | ast.Call)):
                        broken.append(f"{m}:{stmt.lineno} class-level registry in "
                                      f"{node.name}")
    assert not broken, "\n  ".join(broken)


def test_the_checker_sees_violations() -> None:
    """The rules are not vacuous: a made-up module breaking each one is caught."""
    fake = ast.parse("import aiohttp\nfrom climbd.api import keys\nfrom climbd import daemon\n"
                     "from climbd.security.store import AuthStore\nimport aiortc\nimport numpy\n")
    names = [n for n, _ in _imports("climbd.storage.fake", fake)]
    hits = {text for text, _importer, forbidden in RULES if any(forbidden(n) for n in names)}
    assert hits == {r[0] for r in RULES} - {RULES[3][0]}, hits
    assert _imports("climbd.x", ast.parse("if TYPE_CHECKING:\n    import aiohttp\n")) == []
    assert ("climbd.api", 1) in _imports("climbd.y", ast.parse("from climbd import api\n"))
