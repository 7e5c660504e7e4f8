"""Loading TOML into pydantic models with errors that name the key and the file line."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib


class ConfigError(Exception):
    """The configuration cannot be used; the message says which key, where, and why."""


_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*((?:"[^"]*"|'[^']*'|[A-Za-z0-9_\-]+)(?:\s*\.\s*(?:"[^"]*"|'[^']*'|[A-Za-z0-9_\-]+))*)\s*=""")


def _split_key(raw: str) -> tuple[str, ...]:
    parts = re.findall(r""""([^"]*)"|'([^']*)'|([A-Za-z0-9_\-]+)""", raw)
    return tuple(a or b or c for a, b, c in parts)


def key_lines(text: str) -> dict[tuple[Any, ...], int]:
    """Map each table and key path (array entries indexed) to its 1-based line."""
    lines: dict[tuple[Any, ...], int] = {}
    counts: dict[tuple[str, ...], int] = {}
    current: tuple[Any, ...] = ()
    depth = 0  # inside a multi-line array or inline table, lines are values, not keys
    array: tuple[Any, ...] | None = None  # the key whose multi-line array we are in
    element = 0
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        code = re.sub(r"""("[^"]*"|'[^']*')""", '""', line.split("#", 1)[0])
        if depth == 0 and (m := _HEADER.match(line)) and not stripped.startswith("[ "):
            path = _split_key(m.group(2))
            if m.group(1) == "[[":
                counts[path] = counts.get(path, -1) + 1
                current = (*path, counts[path])
            else:
                current = path
            lines.setdefault(current, number)
            continue
        if depth == 0 and (m := _KEY.match(line)):
            key = (*current, *_split_key(m.group(1)))
            lines.setdefault(key, number)
            if code.count("[") > code.count("]"):
                array, element = key, 0
        elif depth == 1 and array is not None and stripped.startswith("{"):
            # One inline table per line in a multi-line array: index it and its keys.
            lines.setdefault((*array, element), number)
            for k in re.findall(r"([A-Za-z0-9_\-]+)\s*=", code):
                lines.setdefault((*array, element, k), number)
            element += 1
        depth = max(0, depth + code.count("[") + code.count("{") - code.count("]") - code.count("}"))
        if depth == 0:
            array = None
    return lines


def locate(lines: dict[tuple[Any, ...], int], loc: tuple[Any, ...]) -> int | None:
    """The line of the longest prefix of `loc` that the file names."""
    for end in range(len(loc), 0, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def read_toml(path: Path) -> tuple[dict[str, Any], str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def explain(path: Path, text: str, error: ValidationError, prefix: tuple[Any, ...] = ()) -> list[str]:
    """One readable line per problem: file:line: key: what is wrong."""
    lines = key_lines(text)
    out = []
    for err in error.errors():
        loc = (*prefix, *err["loc"])
        # pydantic puts union/model branch names in loc; they are not keys in the file.
        loc = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("function-")))
        line = locate(lines, loc)
        where = f"{path}:{line}" if line else str(path)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (misspelt?)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        out.append(f"{where}: {dotted(loc) or '(top level)'}: {msg}")
    return out


def validate(model: type[BaseModel], data: Any, path: Path, text: str, prefix: tuple[Any, ...] = ()) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("\n".join(explain(path, text, exc, prefix))) from None
