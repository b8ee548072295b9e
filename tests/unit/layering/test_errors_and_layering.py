"""The error tree (stable codes, statuses, rendering) and the core's layering rules:
no web framework or SQL imported, every module declaring a truthful ``__all__``."""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import re
import subprocess
import sys
from types import ModuleType

import pytest

import broker.core
from broker.core import errors
from broker.core.errors import BrokerError

FORBIDDEN = ("fastapi", "starlette", "sqlalchemy", "sqlmodel", "alembic", "uvicorn", "jinja2")


def core_module_names() -> list[str]:
    names = [m.name for m in pkgutil.walk_packages(broker.core.__path__, "broker.core.")]
    assert len(names) >= 8, names  # the walk really found the package's modules
    return sorted(names)


CORE_MODULES = core_module_names()


def error_classes() -> list[type[BrokerError]]:
    return [
        obj
        for obj in vars(errors).values()
        if inspect.isclass(obj) and issubclass(obj, BrokerError)
    ]


# --- errors -------------------------------------------------------------------------


def test_every_error_class_is_exported() -> None:
    # every class, and the one builder of the error shape
    assert {cls.__name__ for cls in error_classes()} | {"error_body"} == set(errors.__all__)


def test_codes_are_unique_strings_and_statuses_are_http_error_ints() -> None:
    classes = error_classes()
    codes = [cls.code for cls in classes]
    assert len(codes) == len(set(codes)), f"duplicate codes: {codes}"
    for cls in classes:
        assert isinstance(cls.code, str)
        assert re.fullmatch(r"[a-z][a-z_]*", cls.code), cls.code
        assert type(cls.status) is int, cls
        assert 400 <= cls.status <= 599, cls


def test_every_subclass_declares_its_own_code() -> None:
    """A subclass that forgot ``code`` would render as its parent's code."""
    for cls in error_classes():
        assert "code" in vars(cls), f"{cls.__name__} inherits its code"


def _docstring_tree() -> dict[str, tuple[str, int, str | None]]:
    """name -> (code, status, parent) as drawn in the errors module docstring."""
    root = BrokerError
    rows: dict[str, tuple[str, int, str | None]] = {root.__name__: (root.code, root.status, None)}
    stack: list[tuple[int, str]] = [(0, root.__name__)]  # the header row: the root
    for line in (errors.__doc__ or "").splitlines():
        m = re.match(r"^(\s*[│├└─ ]*)([A-Z]\w+)\s+([a-z_]+)\s+(\d{3})\s*$", line)
        if not m:
            continue
        column, name = len(m.group(1)), m.group(2)
        while len(stack) > 1 and stack[-1][0] >= column:
            stack.pop()
        rows[name] = (m.group(3), int(m.group(4)), stack[-1][1] if stack else None)
        stack.append((column, name))
    return rows


def test_docstring_tree_matches_the_classes() -> None:
    drawn = _docstring_tree()
    classes = {cls.__name__: cls for cls in error_classes()}
    assert sorted(set(classes) - set(drawn)) == [], "error classes missing from the docstring"
    assert sorted(set(drawn) - set(classes)) == [], "docstring names classes that do not exist"
    for name, (code, status, parent) in drawn.items():
        cls = classes[name]
        assert (cls.code, cls.status) == (code, status), name
        base = cls.__bases__[0]
        assert (base.__name__ if base is not Exception else None) == parent, name


def test_the_error_shape_is_built_in_one_place() -> None:
    import broker.web.api.error_responses as examples

    body = errors.error_body("conflict", "it clashed")
    assert body == {"error": {"code": "conflict", "message": "it clashed", "details": {}}}
    assert errors.Conflict("it clashed").to_dict() == body
    assert examples.error_response(409, ["conflict"])  # the OpenAPI examples use it too
    assert "error_body" in inspect.getsource(examples)


def test_to_dict_shape_is_json_safe() -> None:
    err = errors.NotFound("unknown connection 'c1'", details={"connection": "c1"})
    assert err.to_dict() == {
        "error": {
            "code": "not_found",
            "message": "unknown connection 'c1'",
            "details": {"connection": "c1"},
        }
    }
    assert json.loads(json.dumps(err.to_dict())) == err.to_dict()


@pytest.mark.parametrize("cls", error_classes(), ids=lambda c: c.__name__)
def test_every_error_renders(cls: type[BrokerError]) -> None:
    err = cls("something went wrong")
    assert isinstance(err, Exception)
    assert str(err) == "something went wrong"
    assert err.message == "something went wrong"
    assert err.details == {}
    assert err.to_dict() == {
        "error": {"code": cls.code, "message": "something went wrong", "details": {}}
    }


def test_default_details_are_not_shared_between_instances() -> None:
    a = errors.InvalidInput("a")
    b = errors.InvalidInput("b")
    a.details["x"] = 1
    assert b.details == {}
    assert errors.InvalidInput("c").details == {}


def test_subclasses_are_caught_by_their_parents() -> None:
    with pytest.raises(errors.InvalidInput):
        raise errors.PayloadTooLarge("too big")
    with pytest.raises(errors.PermissionDenied):
        raise errors.OutsideGrant("outside")
    with pytest.raises(errors.Conflict):
        raise errors.ConnectionNotActive("revoked")
    assert errors.ReturnUrlNotAllowed.status == errors.InvalidInput.status == 422
    assert errors.OutsideGrant.status == 403


# --- layering -----------------------------------------------------------------------

_PROBE = """
import importlib, json, sys
for name in {modules!r}:
    importlib.import_module(name)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {forbidden!r})))
"""


def test_core_imports_no_web_framework_or_sql() -> None:
    code = _PROBE.format(modules=CORE_MODULES, forbidden=FORBIDDEN)
    result = subprocess.run(  # noqa: S603 - our own interpreter, our own code
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    leaked = json.loads(result.stdout.strip().splitlines()[-1])
    assert leaked == [], f"broker.core pulled in {leaked}"


def test_layering_probe_would_notice_a_leak() -> None:
    """Guard against a probe that can never fail (e.g. checking the wrong dict)."""
    code = _PROBE.format(modules=["json", "email.parser"], forbidden=("email",))
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "email.parser" in json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", CORE_MODULES)
def test_core_module_imports_nothing_above_core(name: str) -> None:
    """broker.core never imports broker.store / web / flows / cli (dependencies point inward)."""
    source = inspect.getsource(importlib.import_module(name))
    imported = re.findall(r"^\s*(?:from|import)\s+(broker(?:\.\w+)*)", source, flags=re.M)
    outside = [m for m in imported if not (m == "broker.core" or m.startswith("broker.core."))]
    assert outside == [], f"{name} imports {outside}"


@pytest.mark.parametrize("name", CORE_MODULES)
def test_core_module_declares_a_truthful_all(name: str) -> None:
    module: ModuleType = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    assert isinstance(exported, list | tuple)
    assert all(isinstance(n, str) for n in exported)
    assert len(exported) == len(set(exported)), f"{name}.__all__ has duplicates"
    missing = [n for n in exported if not hasattr(module, n)]
    assert missing == [], f"{name}.__all__ names missing objects: {missing}"
    public_defs = {
        n
        for n, obj in vars(module).items()
        if not n.startswith("_")
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and obj.__module__ == name
    }
    assert public_defs <= set(exported), (
        f"{name} defines public {sorted(public_defs - set(exported))} outside __all__"
    )


# What a migration may import from the live code: column types, and the log format
# (canonical encoding, Merkle hashes), a fixed specification. Anything else a migration
# needs (field lists, index names, statuses) is frozen in the migration itself.
_MIGRATION_IMPORTS = {
    "broker.store.types": None,
    "broker.core.audit_chain": {"canonical_bytes"},
    "broker.core.merkle": {"Frontier", "leaf_hash", "node_position"},
}


def test_migrations_import_only_fixed_specifications() -> None:
    import ast
    from pathlib import Path

    versions = Path(broker.core.__file__).parent.parent / "store" / "migrations" / "versions"
    found: list[str] = []
    for path in sorted(versions.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                pairs = [(a.name, None) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                pairs = [(node.module, a.name) for a in node.names]
            else:
                continue
            for module, name in pairs:
                if not module.startswith("broker"):
                    continue
                allowed = _MIGRATION_IMPORTS.get(module, set())
                if module not in _MIGRATION_IMPORTS or (allowed and name not in allowed):
                    found.append(f"{path.name}: {module}.{name}")
    assert found == []
    assert len(list(versions.glob("*.py"))) >= 20  # the probe read them all


# --- every layer -----------------------------------------------------------------------
# The imports point one way: core <- store <- flows <- web <- cli. The web layer reads
# tables only through flows or store functions; it may name a table's model as a type.
_LAYERS: dict[str, tuple[str, ...]] = {
    "broker.store": ("broker.flows", "broker.web", "broker.cli"),
    "broker.flows": ("broker.web", "broker.cli"),
    "broker.web": ("broker.cli",),
}
# (web module, model) pairs used as types in signatures, never queried
_WEB_MODEL_TYPES = {
    ("broker.web.deps", "ApiKey"),
    ("broker.web.pages.me", "Connection"),
    ("broker.web.pages.me", "ConsentRecord"),
    ("broker.web.api.transfers", "Transfer"),
}


def _imports(path) -> list[tuple[str, str | None]]:
    import ast

    out: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out += [(node.module, a.name) for a in node.names]
    return out


def _modules(package: str):
    from pathlib import Path

    root = Path(broker.core.__file__).parent.parent
    for path in sorted((root / package.split(".", 1)[1]).rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        yield ".".join(rel.parts).removesuffix(".__init__"), path


@pytest.mark.parametrize("layer", sorted(_LAYERS))
def test_each_layer_imports_only_the_layers_below(layer: str) -> None:
    above = _LAYERS[layer]
    found = [
        f"{name} imports {module}"
        for name, path in _modules(layer)
        for module, _ in _imports(path)
        if module.startswith(above)
    ]
    assert found == []


def test_the_web_layer_reads_no_table_itself() -> None:
    """No ORM session or query in broker.web, and table models only as types."""
    found = []
    for name, path in _modules("broker.web"):
        for module, what in _imports(path):
            if module.split(".")[0] in ("sqlmodel", "sqlalchemy"):
                found.append(f"{name} imports {module}.{what}")
            table = module.endswith("_models") or module == "broker.store.models"
            if table and (name, what) not in _WEB_MODEL_TYPES:
                found.append(f"{name} imports the table {what} from {module}")
    assert found == []
