"""Recipes: plain YAML validated by a typed dataclass schema (one schema per command).

Layers, lowest first: the schema's own defaults, a ``base`` dict (e.g. a stage's defaults), the
YAML file, then ``key=value`` overrides with dotted keys (``optim.lr=5e-4``). Unknown keys and
ill-typed values are all collected and reported in one :class:`UserError` line. A recipe is named
by a path or by its name in the shipped recipes: ``mmmamba_cli/recipes/`` inside the package (in a
checkout a link to the top-level ``recipes/`` folder, which is the source; a wheel carries copies).
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from .errors import UserError

T = TypeVar("T")
RECIPE_DIRS = (Path(__file__).resolve().parent / "recipes",)


# ---- finding and reading -------------------------------------------------------------------
def recipe_names() -> list[str]:
    """Names of the shipped recipes (files ``recipes/NAME.yaml``)."""
    return sorted({p.stem for d in RECIPE_DIRS if d.is_dir() for p in d.glob("*.yaml")})


def find_recipe(name_or_path: str | Path, candidates: tuple[str, ...] = ()) -> Path:
    """A recipe file: an existing path, else ``recipes/<candidate>.yaml`` for each candidate name
    (default: the name itself), first match wins."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file() or len(path.parts) > 1:
        if not path.is_file():
            raise UserError(f"recipe file {path} not found")
        return path
    for name in candidates or (str(name_or_path),):
        for d in RECIPE_DIRS:
            if (d / f"{name}.yaml").is_file():
                return d / f"{name}.yaml"
    raise UserError(f"unknown recipe {str(name_or_path)!r}: not a file, nor one of the shipped recipes "
                    f"({', '.join(recipe_names()) or 'none'})")


def read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise UserError(f"recipe {path} is not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"recipe {path} must hold a mapping of keys to values")
    return data


def parse_overrides(items: list[str] | tuple[str, ...] | dict | None) -> dict:
    """``["optim.lr=5e-4", "train.steps=10"]`` -> nested dict; values are parsed as YAML scalars."""
    if not items:
        return {}
    if isinstance(items, dict):
        return unflatten(items)
    flat = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"override {item!r} is not key=value (e.g. optim.lr=5e-4)")
        try:
            flat[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            flat[key.strip()] = value
    return unflatten(flat)


def unflatten(flat: dict) -> dict:
    out: dict = {}
    for key, value in flat.items():
        node, parts = out, str(key).split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"override {key!r} sets a key under a value that is not a section")
        node[parts[-1]] = unflatten(value) if isinstance(value, dict) else value
    return out


def merge(base: dict, update: dict) -> dict:
    """Deep merge: mappings merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in update.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


# ---- validation ----------------------------------------------------------------------------
def build(schema: type[T], data: dict, where: str = "recipe") -> T:
    """Validate ``data`` against the dataclass ``schema``; every problem in one UserError."""
    errors: list[str] = []
    obj = _build(schema, data, "", errors)
    if obj is not None and hasattr(obj, "check"):
        try:  # semantic checks too, unless a type error makes them meaningless
            errors.extend(obj.check())
        except (TypeError, ValueError, AttributeError, KeyError):
            pass
    if errors:
        raise UserError(f"{where}: " + "; ".join(errors))
    return obj


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)


def load_recipe(schema: type[T], name_or_path: str | Path | None = None, overrides=None, base: dict | None = None,
                candidates: tuple[str, ...] = ()) -> T:
    """schema defaults <- base <- YAML file <- overrides, validated."""
    data = dict(base or {})
    where = "recipe"
    if name_or_path is not None:
        path = find_recipe(name_or_path, candidates)
        data = merge(data, read_yaml(path))
        where = f"recipe {path.name}"
    data = merge(data, parse_overrides(overrides))
    return build(schema, data, where)


def _build(schema, data, prefix: str, errors: list[str]):
    if not isinstance(data, dict):
        errors.append(f"{prefix.rstrip('.') or 'recipe'}: expected a section (mapping), got {data!r}")
        return None
    hints = typing.get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema)}
    for key in data:
        if key not in fields:
            near = difflib.get_close_matches(str(key), list(fields), n=1)
            errors.append(f"unknown key {prefix}{key}" + (f" (did you mean {prefix}{near[0]}?)" if near else ""))
    values = {}
    for name, f in fields.items():
        if name in data:
            values[name] = _value(hints[name], data[name], f"{prefix}{name}", errors)
        elif dataclasses.is_dataclass(hints[name]):
            values[name] = _build(hints[name], {}, f"{prefix}{name}.", errors)
    try:
        return schema(**values)
    except (TypeError, ValueError) as e:
        errors.append(f"{prefix.rstrip('.') or 'recipe'}: {e}")
        return None


def _value(tp, value, key: str, errors: list[str]) -> Any:
    """Check (and gently coerce) ``value`` against the annotation ``tp``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _value(inner[0], value, key, errors)
        for a in inner:
            sub: list[str] = []
            out = _value(a, value, key, sub)
            if not sub:
                return out
        errors.append(f"{key}: {value!r} is not one of {', '.join(_name(a) for a in inner)}")
        return None
    if origin is Literal:
        if value not in args:
            errors.append(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            errors.append(f"{key}: expected a list, got {value!r}")
            return value
        item = args[0] if args else Any
        out = [_value(item, v, f"{key}[{i}]", errors) for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):  # `train=3`, `train=`, `optim=[1,2]`, `train: 3`
            errors.append(f"{key}: expected a section of keys (e.g. {key}.<name>=...), got "
                          f"{'nothing' if value is None else repr(value)}")
            value = {}  # the defaults stand in, so the remaining checks still run
        return _build(tp, value, key + ".", errors)
    return _scalar(tp, value, key, errors)


def _scalar(tp, value, key: str, errors: list[str]):
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            errors.append(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            errors.append(f"{key}: expected a number, got {value!r}")
            return value
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            errors.append(f"{key}: expected a string, got {value!r}")
        return value
    return value


def _name(tp) -> str:
    return getattr(tp, "__name__", str(tp))
