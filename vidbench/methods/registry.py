"""Which methods exist, found without a list of names: built-ins, installed plugins and dotted paths.

Every method reaches the suite the same way: a :class:`~vidbench.methods.base.RetrievalMethod` subclass with
a class attribute ``config_schema`` (a dataclass whose ``name`` field is the ``method.name`` recipes write,
validated like every other section). Three sources feed one registry:

* built-ins: every module of the ``vidbench.methods`` package is imported (``pkgutil``) and registers its
  classes with :func:`register_method`. No install metadata is read, so a stale editable install or a
  source checkout on ``PYTHONPATH`` still finds them;
* installed plugins: the entry-point group ``vidbench.methods`` (``name = "package.module:Class"``);
* code that is not installed: ``method.name: package.module:Class`` in a recipe, imported from ``sys.path``
  or, failing that, from the recipe's own folder.

A plugin that cannot be found, does not import, or lacks a part of the contract raises
:class:`MethodPluginError` naming the entry point or dotted path and what is missing; it never stops the
built-ins or the other plugins from loading (:func:`available_methods` reports it instead of raising).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from vidbench.errors import ConfigError

ENTRY_POINT_GROUP = "vidbench.methods"


class MethodPluginError(ConfigError):
    """A method plugin (entry point or dotted path) is missing, fails to import, or breaks the contract."""


@dataclass(frozen=True)
class MethodEntry:
    """One registered method: the name recipes use, its class, its config schema and where it came from."""

    name: str
    cls: type
    schema: type
    source: str  # "built-in vidbench.methods.drl", "entry point maxpool = pkg.mod:Cls", "dotted path pkg.mod:Cls"

    @property
    def import_root(self) -> Path | None:
        """The ``sys.path`` folder the class's top-level package was imported from (None for built-ins), so
        a job started elsewhere (SLURM) can be given the same ``PYTHONPATH``."""
        if self.source.startswith("built-in"):
            return None
        top = sys.modules.get(self.cls.__module__.split(".")[0])
        paths = list(getattr(top, "__path__", []) or [])
        if paths:
            return Path(paths[0]).resolve().parent
        file = getattr(top, "__file__", None)
        return Path(file).resolve().parent if file else None


_REGISTRY: dict[str, MethodEntry] = {}
_builtins_loaded = False


def contract_problems(cls: Any) -> list[str]:
    """What ``cls`` lacks to be a method (empty when it is one); the registry's one check for every source."""
    from vidbench.methods.base import RetrievalMethod

    if not inspect.isclass(cls):
        return [f"it is a {type(cls).__name__}, not a class"]
    if not issubclass(cls, RetrievalMethod):
        return ["the class must subclass vidbench.methods.base.RetrievalMethod (or ClipMethod)"]
    problems = []
    missing = sorted(getattr(cls, "__abstractmethods__", ()))
    if missing:
        problems.append(f"it does not implement {', '.join(missing)}")
    schema = getattr(cls, "config_schema", None)
    if schema is None:
        problems.append("it has no class attribute config_schema (a dataclass of its method.* keys)")
    elif not (dataclasses.is_dataclass(schema) and isinstance(schema, type)):
        problems.append(f"config_schema must be a dataclass class, got {schema!r}")
    elif "name" not in {f.name for f in dataclasses.fields(schema)}:
        problems.append(f"config_schema {schema.__name__} has no 'name' field (recipes set method.name)")
    if not isinstance(getattr(cls, "method_name", None), str) or cls.method_name in ("", "base"):
        problems.append("it has no class attribute method_name (the family name written to result.json)")
    return problems


def _add(name: str, cls: type, source: str) -> MethodEntry:
    problems = contract_problems(cls)
    if problems:
        raise MethodPluginError(f"method {source} is incomplete: {'; '.join(problems)} (see README 'Add a method')")
    entry = MethodEntry(name, cls, cls.config_schema, source)
    old = _REGISTRY.get(name)
    if old is not None and old.cls is not cls:
        raise MethodPluginError(f"method name '{name}' is registered twice: {old.source} and {source}; rename one")
    _REGISTRY[name] = entry
    return entry


def register_method(schema: type) -> Callable[[type], type]:
    """Class decorator of the built-ins (and usable by plugins): ``@register_method(MySchema)`` attaches
    ``MySchema`` as ``config_schema`` and registers the class under the schema's default ``name``."""
    default = {f.name: f.default for f in dataclasses.fields(schema)}.get("name")
    if not isinstance(default, str) or not default:
        raise TypeError(f"{schema.__name__}: the schema's 'name' field needs a default (the method's name)")

    def wrap(cls: type) -> type:
        cls.config_schema = schema
        _add(default, cls, f"built-in {cls.__module__}.{cls.__qualname__}")
        return cls

    return wrap


def load_builtins() -> None:
    """Import every module of ``vidbench.methods``; each registers its methods as it is imported."""
    global _builtins_loaded
    if _builtins_loaded:
        return
    import vidbench.methods as package

    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")
    _builtins_loaded = True


def _entry_points() -> list[metadata.EntryPoint]:
    return sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def _describe(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    where = f" (package {dist.name})" if dist is not None and getattr(dist, "name", None) else ""
    return f"entry point '{ep.name} = {ep.value}'{where} of group {ENTRY_POINT_GROUP}"


def _load_entry_point(ep: metadata.EntryPoint) -> MethodEntry:
    source = _describe(ep)
    try:
        cls = ep.load()
    except Exception as exc:  # a plugin's crash at import is reported, never propagated raw
        raise MethodPluginError(
            f"method {source} failed to import: {type(exc).__name__}: {exc}; fix or reinstall that package "
            "(`vidbench list --methods` shows every plugin's state)"
        ) from exc
    return _add(ep.name, cls, source)


def _import_dotted(path: str, search_dirs: Iterable[Path]) -> MethodEntry:
    module_name, _, attr = path.partition(":")
    source = f"dotted path '{path}'"
    if not module_name or not attr:
        raise MethodPluginError(f"method.name {source} must look like package.module:Class")
    extra = [str(Path(d).resolve()) for d in search_dirs]
    try:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if not extra or exc.name is None or not module_name.startswith(exc.name.split(".")[0]):
                raise
            sys.path[:0] = [d for d in extra if d not in sys.path]  # the recipe's folder, as documented
            importlib.invalidate_caches()
            module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and not (module_name + ".").startswith(exc.name + "."):  # the plugin lacks a dependency
            raise MethodPluginError(f"method {source} failed to import: ModuleNotFoundError: {exc}") from exc
        looked = ", ".join(extra) or "nothing else"
        raise MethodPluginError(
            f"method {source}: module '{module_name}' not found (searched sys.path and {looked}); "
            "install the package, add its folder to PYTHONPATH, or put the recipe beside the package"
        ) from exc
    except Exception as exc:
        raise MethodPluginError(f"method {source} failed to import: {type(exc).__name__}: {exc}") from exc
    cls = getattr(module, attr, None)
    if cls is None:
        raise MethodPluginError(f"method {source}: module '{module_name}' has no attribute '{attr}'")
    return _add(path, cls, source)


def method_entry(name: str, *, search_dirs: Iterable[Path] = ()) -> MethodEntry:
    """The registered method ``name``: built-in, entry point, or ``package.module:Class``."""
    load_builtins()
    if name in _REGISTRY:
        return _REGISTRY[name]
    if ":" in name:
        return _import_dotted(name, search_dirs)
    for ep in _entry_points():
        if ep.name == name:
            return _load_entry_point(ep)
    known = sorted({*_REGISTRY, *(ep.name for ep in _entry_points())})
    raise ConfigError(
        f"method.name '{name}' is unknown; choose one of {known}, install a plugin that provides it (entry-point "
        f"group {ENTRY_POINT_GROUP}), or write package.module:Class"
    )


def method_class(name: str) -> type:
    return method_entry(name).cls


def method_schema(name: str, *, search_dirs: Iterable[Path] = ()) -> type:
    return method_entry(name, search_dirs=search_dirs).schema


def available_methods() -> list[tuple[str, str, str | None]]:
    """``(name, source, problem)`` for every built-in and installed plugin; a broken plugin is listed with
    its problem instead of raising, so listing never fails because of one package."""
    load_builtins()
    rows: list[tuple[str, str, str | None]] = []
    for ep in _entry_points():
        if ep.name in _REGISTRY and _REGISTRY[ep.name].source.startswith("built-in"):
            continue
        try:
            _load_entry_point(ep)
        except MethodPluginError as exc:
            rows.append((ep.name, _describe(ep), str(exc)))
    rows += [(e.name, e.source, None) for e in _REGISTRY.values()]
    return sorted(rows)


__all__ = [
    "ENTRY_POINT_GROUP",
    "MethodEntry",
    "MethodPluginError",
    "available_methods",
    "contract_problems",
    "load_builtins",
    "method_class",
    "method_entry",
    "method_schema",
    "register_method",
]
