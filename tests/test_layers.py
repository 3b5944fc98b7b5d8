"""The layers are enforced, not claimed: the core does no I/O and the web process loads no AWS or worker code."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "bot" / "core"
# Libraries that do I/O (or are an adapter's whole reason to exist): none may be imported by the core.
IO_LIBRARIES = frozenset({
    "boto3", "botocore", "gitlab", "redis", "flask", "werkzeug", "celery", "kombu", "requests", "urllib3",
    "socket", "subprocess", "http", "urllib.request", "os", "pathlib", "shutil", "tempfile", "threading",
    "multiprocessing", "asyncio", "logging", "time",
})  # fmt: skip
# Our own outer layers: the core imports nothing outside bot.core.
OUTER_LAYERS = ("bot.adapters", "bot.web", "bot.cli", "bot.config", "bot.logs", "workers")


def imported_modules(source: str, module: str) -> list[str]:
    """Every module `source` (the text of module `module`) imports, at any depth (functions too), absolutely."""
    tree = ast.parse(source)
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package
                package = ".".join(module.split(".")[: -node.level])
                base = f"{package}.{node.module}" if node.module else package
            else:
                base = node.module or ""
            names.append(base)
            names += [f"{base}.{alias.name}" for alias in node.names]
    return names


def forbidden(name: str) -> bool:
    parts = name.split(".")
    if any(".".join(parts[:i]) in IO_LIBRARIES for i in range(1, len(parts) + 1)):
        return True
    return any(name == layer or name.startswith(layer + ".") for layer in OUTER_LAYERS)


CORE_MODULES = sorted(CORE.glob("*.py"))


def test_the_core_has_modules() -> None:
    assert {p.stem for p in CORE_MODULES} >= {"models", "gate", "events", "scan", "policy", "poll", "report"}


@pytest.mark.parametrize("path", CORE_MODULES, ids=lambda p: p.name)
def test_core_module_imports_no_io_and_no_outer_layer(path: Path) -> None:
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    bad = sorted({name for name in imported_modules(path.read_text(encoding="utf-8"), module) if forbidden(name)})
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


@pytest.mark.parametrize("source", [
    "import boto3", "from botocore.config import Config", "import redis.lock", "from flask import Flask",
    "from celery import Celery", "import kombu", "from requests import Session", "import socket",
    "import subprocess", "import gitlab", "from bot.adapters.store import Store", "from bot.web import app",
    "from bot.cli.main import main", "from workers.tasks import poll", "from bot import config",
    "def f():\n    import boto3", "from ..adapters import ecr",
])  # fmt: skip
def test_the_check_catches_each_kind_of_import(source: str) -> None:
    names = [n for n in imported_modules(source, "bot.core.probe") if forbidden(n)]
    assert names, f"{source!r} was not caught"


def test_pure_imports_pass_the_check() -> None:
    for name in ("bot.core.models", "re", "dataclasses", "pydantic", "collections.abc", "enum", "random"):
        assert not forbidden(name), name


def loaded_after(statement: str) -> set[str]:
    """Top-level packages a fresh interpreter has loaded after running `statement`."""
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_importing_the_web_app_loads_no_aws_gitlab_or_worker_code() -> None:
    modules = loaded_after("import bot.web.app")
    assert "bot.web.app" in modules and "flask" in modules
    leaked = sorted(m for m in modules if m.split(".")[0] in {"boto3", "botocore", "gitlab", "workers"})
    assert not leaked, f"the web process loads {leaked[:10]}"


def test_the_check_would_see_a_leak() -> None:
    # The same probe on the worker side must see boto3: otherwise the test above could pass vacuously.
    modules = loaded_after("import workers.tasks")
    assert "boto3" in modules and "workers.tasks" in modules
