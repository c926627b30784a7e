"""One way to build a stage's typed config: defaults in the dataclass, a JSON file and overrides on top, unknown keys
and wrongly typed values refused (as ultralytics' get_cfg does)."""
from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Type, TypeVar, Union

T = TypeVar("T")
PathLike = Union[str, Path]


class ConfigError(ValueError):
    """A setting that does not exist or has the wrong type."""


def _check(cls_name: str, name: str, hint: Any, value: Any) -> Any:
    """`value` as the field's type (lists become tuples, ints become floats), or ConfigError."""
    where = f"{cls_name}.{name}"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union:
        if value is None and type(None) in args:
            return None
        errors = []
        for a in (a for a in args if a is not type(None)):
            try:
                return _check(cls_name, name, a, value)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: got {value!r}")
    if origin in (tuple, typing.Tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check(cls_name, name, args[0], v) for v in value)
        if args and len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_check(cls_name, name, a, v) for a, v in zip(args, value)) if args else tuple(value)
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping of {hint.__name__} settings, got {value!r}")
        return build_config(hint, value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected text, got {value!r}")
        return value
    return value  # Any or a type this checker does not know: taken as given


def build_config(cls: Type[T], values: Mapping[str, Any]) -> T:
    """cls(**values) with every key known and every value of its field's type (nested configs too)."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{cls.__name__}: expected a mapping of settings, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown setting(s) {unknown}; known: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    return cls(**{k: _check(cls.__name__, k, hints[k], v) for k, v in values.items()})


def load_config(cls: Type[T], file: Optional[PathLike] = None, overrides: Optional[Mapping[str, Any]] = None,
                key: Optional[str] = None) -> T:
    """The config `cls`: its defaults, then the JSON `file` (its `key` block when given), then `overrides`.

    Unknown keys and values of the wrong type raise ConfigError naming the setting.
    """
    values: Dict[str, Any] = {}
    if file is not None:
        data = json.loads(Path(file).read_text(encoding="utf-8"))
        if key is not None:
            data = data.get(key, {}) if isinstance(data, Mapping) else data
        if not isinstance(data, Mapping):
            raise ConfigError(f"{file}: expected a JSON object of {cls.__name__} settings")
        values.update(data)
    values.update(overrides or {})
    return build_config(cls, values)


def config_dict(cfg: Any) -> Dict[str, Any]:
    """A JSON-ready dict of a config dataclass (tuples become lists, nested configs dicts)."""
    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return plain(dataclasses.asdict(cfg))
