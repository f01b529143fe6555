"""``--set key=value`` overrides of a study spec, applied to the raw TOML table before validation.

An override is a dotted TOML key and a TOML value: ``recipe.lr=[0.01, 0.1]``, ``executor.workers=2``,
``models.mlp.width=32``, ``seeds=3``, ``models."my_pkg.nets:build".depth=4``. The value is read as the
right-hand side of a TOML assignment (``x = <value>``), so numbers, booleans, strings, lists and inline
tables mean what they mean in a spec file; a bare word that is not a TOML value (``data.name=two_class``)
is taken as a string. A list sweeps, as in the file. The result is validated exactly as a file is, so an
unknown key or a bad value gives the same error as in a file.
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path
from typing import Any

from ..errors import FlatminimaError
from .spec import StudySpec, preset_text, presets, validate

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

SPEC_FILE = "spec.toml"
"""The effective spec (the file or preset with every ``--set`` applied) written into the study folder."""


def _parse_key(key: str, item: str) -> list[str]:
    """The path of a dotted TOML key (quoted parts allowed), read by the TOML parser itself."""
    try:
        table = tomllib.loads(f"{key} = 0")
    except tomllib.TOMLDecodeError:
        raise FlatminimaError(
            f"--set {item!r}: {key!r} is not a dotted key; write e.g. recipe.lr=0.1 or models.mlp.width=32 "
            '(quote a part holding other characters: models."pkg.mod:build".depth=4).'
        ) from None
    path = []
    while isinstance(table, dict):
        (name, table), = table.items()
        path.append(name)
    return path


def _parse_value(text: str) -> Any:
    """A TOML value (``x = <text>``); a bare word that is not one is a string."""
    text = text.strip()
    if not text:
        return ""
    try:
        return tomllib.loads(f"x = {text}")["x"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(raw: dict[str, Any], sets: list[str]) -> dict[str, Any]:
    """A copy of the raw spec table ``raw`` with each ``key=value`` of ``sets`` applied, in order.

    Keys are dotted TOML keys (missing tables are created); values are TOML values, a bare word being a
    string. Nothing is validated here: pass the result to :func:`flatminima.study.validate` (or
    :func:`flatminima.study.run`), which checks it exactly as it checks a file.
    """
    out = copy.deepcopy(raw)
    for item in sets:
        if not isinstance(item, str) or "=" not in item:
            raise FlatminimaError(
                f"--set {item!r}: give key=value, e.g. --set recipe.lr=[0.01,0.1] or --set seeds=3."
            )
        key, value = item.split("=", 1)
        if not key.strip():
            raise FlatminimaError(f"--set {item!r}: the key before '=' is empty.")
        path = _parse_key(key.strip(), item)
        table = out
        for depth, name in enumerate(path[:-1]):
            nxt = table.setdefault(name, {})
            if not isinstance(nxt, dict):
                where = ".".join(path[: depth + 1])
                raise FlatminimaError(
                    f"--set {item!r}: {where} is a value ({nxt!r}), not a table, so it has no key "
                    f"{path[depth + 1]!r}; set {where}=<value> instead."
                )
            table = nxt
        table[path[-1]] = _parse_value(value)
    return out


def load_raw(path: str | Path) -> dict[str, Any]:
    """A spec file's TOML table, not yet validated (the same errors as :func:`flatminima.study.load`)."""
    path = Path(path)
    if not path.exists():
        raise FlatminimaError(f"study spec {str(path)!r} does not exist; presets: {presets()}.")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise FlatminimaError(f"study spec {str(path)!r} is not valid TOML: {err}") from None


def resolve_with_overrides(spec: str | Path | None, preset: str | None, sets: list[str]) -> StudySpec:
    """The validated spec of a file or a preset with ``sets`` applied first (``--set`` on the CLI)."""
    if preset is not None and spec is not None:
        raise FlatminimaError("give a spec file or a preset, not both.")
    if preset is not None:
        raw, source = tomllib.loads(preset_text(preset)), f"preset {preset!r}"
    elif spec is not None:
        raw, source = load_raw(spec), repr(str(spec))
    else:
        raise FlatminimaError("give a study spec (a TOML file) or a preset (e.g. --preset quick).")
    if not raw and not sets:
        raise FlatminimaError(
            f"study spec {source} is empty; a spec names at least its models, recipe and measures "
            f"(start from a preset: `flatminima study run --preset quick`, presets: {presets()})."
        )
    if sets:
        raw, source = apply_overrides(raw, sets), f"{source} with --set {' '.join(sets)}"
    return validate(raw, source=source)


def _without_none(value: Any) -> Any:
    """TOML has no null: unset optional settings are left out (they read back as their defaults)."""
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


def spec_toml(spec: StudySpec) -> str:
    """The spec as TOML, every setting spelled out (defaults included); it loads back to the same spec."""
    import tomli_w

    return tomli_w.dumps(_without_none(spec.model_dump(mode="json")))


def write_spec(folder: str | Path, spec: StudySpec) -> Path:
    """Write the effective spec to ``<folder>/spec.toml`` (atomically: a reader never sees half a file)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / SPEC_FILE
    tmp = path.with_name(f".{SPEC_FILE}.{os.getpid()}.tmp")
    tmp.write_text("# the effective spec of this study (the spec file or preset with every --set applied)\n"
                   + spec_toml(spec))
    os.replace(tmp, path)
    return path
