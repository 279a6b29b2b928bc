"""Where use cases come from: the shipped examples, and the user's own.

A user's use case lives in the user's repository, found through
- ``ML_PLATFORM_USE_CASES``: comma-separated Python module paths (``my_pkg.pumps``), Python files
  (``/path/pumps.py``) or YAML files (``/path/pumps.yaml``, one use case or a list);
- the entry-point group ``ml_platform.use_cases`` of an installed package.
A Python module or entry point gives a ``UseCaseSpec``, a list of them, or a module defining
``SPEC`` or ``SPECS``. Every spec is validated when loaded (``spec_file.validate``).
"""

from __future__ import annotations

import importlib
import importlib.util
import types
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path

from ml_platform.settings import Settings, load_settings
from ml_platform.spec import UseCaseSpec
from ml_platform.spec_file import UseCaseError, read_spec_file, validate

ENTRY_POINT_GROUP = "ml_platform.use_cases"
SHIPPED = ("ml_platform.usecases.sensor_anomaly", "ml_platform.usecases.card_fraud")


@dataclass(frozen=True)
class FoundUseCase:
    spec: UseCaseSpec
    origin: str  # where it was declared, as a user would look for it


def _specs_of(obj: object, origin: str) -> list[UseCaseSpec]:
    if isinstance(obj, types.ModuleType):
        obj = getattr(obj, "SPECS", None) or getattr(obj, "SPEC", None)
        if obj is None:
            raise UseCaseError(f"{origin}: defines neither SPEC nor SPECS")
    items = list(obj) if isinstance(obj, list | tuple) else [obj]
    bad = [type(i).__name__ for i in items if not isinstance(i, UseCaseSpec)]
    if bad or not items:
        raise UseCaseError(f"{origin}: expected UseCaseSpec objects, got {bad or 'nothing'}")
    return [validate(spec, origin) for spec in items]


def _from_entry(entry: str) -> list[UseCaseSpec]:
    path = Path(entry).expanduser()
    if entry.endswith((".yaml", ".yml")):
        if not path.is_file():
            raise UseCaseError(f"{entry}: no such spec file (named in ML_PLATFORM_USE_CASES)")
        return read_spec_file(path.resolve())
    if entry.endswith(".py"):
        if not path.is_file():
            raise UseCaseError(f"{entry}: no such file (named in ML_PLATFORM_USE_CASES)")
        name = f"ml_platform_user_use_case_{abs(hash(str(path.resolve())))}"
        loader = importlib.util.spec_from_file_location(name, path.resolve())
        module = importlib.util.module_from_spec(loader)
        try:
            loader.loader.exec_module(module)
        except Exception as error:
            raise UseCaseError(f"{entry}: failed to load: {type(error).__name__}: {error}") from None
        return _specs_of(module, str(path.resolve()))
    try:
        module = importlib.import_module(entry)
    except ImportError as error:
        raise UseCaseError(f"{entry}: cannot import it (named in ML_PLATFORM_USE_CASES): {error}") from None
    return _specs_of(module, f"module {entry}")


def _entry_points() -> list[tuple[UseCaseSpec, str]]:
    found = []
    for point in entry_points(group=ENTRY_POINT_GROUP):
        origin = f"entry point {point.name} = {point.value} ({ENTRY_POINT_GROUP})"
        try:
            loaded = point.load()
        except Exception as error:
            raise UseCaseError(f"{origin}: failed to load: {type(error).__name__}: {error}") from None
        found += [(spec, origin) for spec in _specs_of(loaded, origin)]
    return found


def discover(declared: str) -> dict[str, FoundUseCase]:
    """The shipped use cases, then those named in ``declared`` (the ``ML_PLATFORM_USE_CASES``
    value), then those of installed entry points; a name declared twice is an error naming both."""
    found: dict[str, FoundUseCase] = {}

    def add(spec: UseCaseSpec, origin: str) -> None:
        if spec.name in found:
            raise UseCaseError(
                f"{origin}: use case {spec.name!r} is already declared by {found[spec.name].origin}"
            )
        found[spec.name] = FoundUseCase(spec, origin)

    for module in SHIPPED:
        for spec in _specs_of(importlib.import_module(module), f"shipped example {module}"):
            add(spec, f"shipped example {module}")
    for entry in (e.strip() for e in declared.split(",")):
        if entry:
            for spec in _from_entry(entry):
                add(spec, entry if entry.endswith((".py", ".yaml", ".yml")) else f"module {entry}")
    for spec, origin in _entry_points():
        add(spec, origin)
    return found


@cache
def _discovered(declared: str) -> dict[str, FoundUseCase]:
    return discover(declared)


def use_cases(settings: Settings | None = None) -> dict[str, UseCaseSpec]:
    """Every use case of this platform (as ``settings`` declare them), by name."""
    settings = settings or load_settings()
    return {name: found.spec for name, found in _discovered(settings.use_cases).items()}


def origins(settings: Settings | None = None) -> dict[str, str]:
    settings = settings or load_settings()
    return {name: found.origin for name, found in _discovered(settings.use_cases).items()}


@dataclass(frozen=True)
class Example:
    """What `make demo` does with a shipped use case: land its synthetic data in a landing folder
    (returning the new files), then send these predict requests."""

    land: Callable[[Path], list[Path]]
    requests: tuple[dict, ...]


def examples() -> dict[str, Example]:
    """The shipped use cases' examples, by use case name, in the order they ship."""
    found = {}
    for name in SHIPPED:
        module = importlib.import_module(name)
        found[module.SPEC.name] = module.EXAMPLE
    return found


def get_use_case(name: str, settings: Settings | None = None) -> UseCaseSpec:
    known = use_cases(settings)
    try:
        return known[name]
    except KeyError:
        raise KeyError(f"unknown use case {name!r}; known: {', '.join(sorted(known))}") from None
