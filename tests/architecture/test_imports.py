"""The dependency rule of the code map (README "Code map"), checked on every import statement
in service/ and workers/ (those inside functions too), so the folders keep telling the truth.

    entry surfaces   service.app, wsgi, cli, dev, doctor, gunicorn_conf, service.web, service.api,
                     workers
    lifecycle        service.connections, service.events (delivery and feed of the outbox)
    sync             service.sync
    wiring           service.services
    adapters         service.close, service.source, service.jobs (the only one that knows Celery)
    plumbing         service.infra
    shared by all    service.settings, service.errors

A module may import its own layer or any layer below, never one above. The simulators
(service.sandbox, service.demo_source) sit beside all of this: only the CLI and the dev runner
import them, and they import nothing of ours but the plumbing.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit


ROOT = Path(__file__).resolve().parents[2]
SIMULATORS = ("service.sandbox", "service.demo_source")
SIMULATOR_USERS = {"service.cli", "service.dev"}
NO_FLASK = (
    "service.sync",
    "service.close",
    "service.source",
    "service.infra",
    "service.connections",
    "service.events",
    "service.services",
    "service.jobs",
)
LAYERS: list[tuple[int, tuple[str, ...]]] = [
    (-1, ("service.settings", "service.errors")),
    (0, ("service.infra",)),
    (1, ("service.close", "service.source", "service.jobs")),
    (2, ("service.services",)),
    (3, ("service.sync",)),
    (4, ("service.connections", "service.events")),
    (
        5,
        (
            "service.app",
            "service.wsgi",
            "service.cli",
            "service.dev",
            "service.doctor",
            "service.gunicorn_conf",
            "service.web",
            "service.api",
            "workers",
        ),
    ),
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _our_modules() -> dict[str, Path]:
    files = [*ROOT.joinpath("service").rglob("*.py"), *ROOT.joinpath("workers").rglob("*.py")]
    return {_module_name(p): p for p in files}


MODULES = _our_modules()


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _imports(module: str, path: Path) -> Iterator[str]:
    """The modules `module` imports (resolved to a module file of ours where there is one)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield candidate if candidate in MODULES else base


def _graph() -> dict[str, set[str]]:
    return {
        module: {target for target in _imports(module, path) if target in MODULES}
        for module, path in MODULES.items()
    }


def _layer(module: str) -> int | None:
    for layer, prefixes in LAYERS:
        if any(_within(module, prefix) for prefix in prefixes):
            return layer
    return None


def _all_imports() -> Iterator[tuple[str, str]]:
    for module, path in MODULES.items():
        for target in _imports(module, path):
            yield module, target


def test_the_map_covers_every_module() -> None:
    unplaced = [
        m for m in MODULES if _layer(m) is None and m != "service" and not m.startswith(SIMULATORS)
    ]
    assert unplaced == []


def test_no_module_imports_a_layer_above_its_own() -> None:
    upward = []
    for module, target in _all_imports():
        mine, theirs = _layer(module), _layer(target)
        if mine is not None and theirs is not None and theirs > mine:
            upward.append(f"{module} (layer {mine}) imports {target} (layer {theirs})")
    assert upward == []


def test_service_never_imports_workers() -> None:
    offenders = [
        f"{m} imports {t}"
        for m, t in _all_imports()
        if _within(m, "service") and _within(t, "workers")
    ]
    assert offenders == []


def test_only_the_cli_and_the_dev_runner_import_the_simulators() -> None:
    offenders = [
        f"{m} imports {t}"
        for m, t in _all_imports()
        if t.startswith(SIMULATORS)
        and m not in SIMULATOR_USERS
        and not any(_within(m, s) and _within(t, s) for s in SIMULATORS)
    ]
    assert offenders == []


def test_the_simulators_use_nothing_of_ours_but_the_plumbing() -> None:
    offenders = [
        f"{m} imports {t}"
        for m, t in _all_imports()
        if m.startswith(SIMULATORS)
        and _within(t, "service")
        and not _within(t, "service.infra")
        and not any(_within(m, s) and _within(t, s) for s in SIMULATORS)
    ]
    assert offenders == []


@pytest.mark.parametrize("package", NO_FLASK)
def test_the_domain_and_adapters_do_not_import_flask(package: str) -> None:
    offenders = [
        f"{m} imports {t}"
        for m, t in _all_imports()
        if _within(m, package) and (_within(t, "flask") or _within(t, "flask_wtf"))
    ]
    assert offenders == []


def test_only_service_jobs_and_workers_import_celery() -> None:
    offenders = [
        f"{m} imports {t}"
        for m, t in _all_imports()
        if (_within(t, "celery") or _within(t, "kombu"))
        and m != "service.jobs"
        and not _within(m, "workers")
    ]
    assert offenders == []


def test_there_is_no_import_cycle_between_files() -> None:
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph[node]:
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert cycles == []


def test_service_keeps_at_most_twelve_modules_at_its_root() -> None:
    root_modules = sorted(
        p.name for p in ROOT.joinpath("service").glob("*.py") if p.name != "__init__.py"
    )
    assert len(root_modules) <= 12, root_modules


def test_the_rule_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: a domain module importing an entry surface is caught."""
    fake = tmp_path / "service" / "sync" / "bad.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("from service.web.context import services\n")
    module = "service.sync.bad"
    targets = list(_imports(module, fake))
    assert targets == ["service.web.context"]
    layer_of_target = _layer(targets[0])
    layer_of_module = _layer(module)
    assert layer_of_target is not None and layer_of_module is not None
    assert layer_of_target > layer_of_module
