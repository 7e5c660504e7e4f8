"""Loading TOML into pydantic models with errors that name the key and the file line."""

from __future__ import annotations

import re
import sys
from pathlib import Path, PurePath, PureWindowsPath
from typing import Any

from pydantic import BaseModel, ValidationError

from hisguard.bilingual import both
from hisguard.plan import Text

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
    counts: dict[tuple[Any, ...], int] = {}  # each array of tables (by its indexed path): its last index
    current: tuple[Any, ...] = ()
    depth = 0  # inside a multi-line array or inline table, lines are values, not keys
    array: tuple[Any, ...] | None = None  # the key whose multi-line array we are in
    element = 0
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        code = re.sub(r"""("[^"]*"|'[^']*')""", '""', line.split("#", 1)[0])
        if depth == 0 and (m := _HEADER.match(line)) and not stripped.startswith("[ "):
            # [[probe.snmp.devices]] adds to the devices of the latest [[probe.snmp]]: index every
            # array of tables on the way, as pydantic's error locations do.
            current = ()
            parts = _split_key(m.group(2))
            for i, part in enumerate(parts):
                current = (*current, part)
                last = i == len(parts) - 1
                if last and m.group(1) == "[[":
                    counts[current] = counts.get(current, -1) + 1
                if current in counts:
                    current = (*current, counts[current])
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


# What is wrong, in Chinese, by pydantic's error type; the English is pydantic's own message.
_PROBLEM_ZH: dict[str, str] = {
    "missing": "缺少必填的键",
    "extra_forbidden": "未知的键（拼写错误？）",
    "greater_than": "数值太小",
    "greater_than_equal": "数值太小",
    "less_than": "数值太大",
    "less_than_equal": "数值太大",
    "string_pattern_mismatch": "格式不对",
    "string_too_short": "太短",
    "string_too_long": "太长",
    "too_short": "项数太少",
    "too_long": "项数太多",
    "literal_error": "不是允许的取值",
    "enum": "不是允许的取值",
}
_TYPE_ZH = {
    "int": "应为整数",
    "float": "应为数字",
    "bool": "应为 true 或 false",
    "string": "应为字符串",
    "list": "应为数组",
    "dict": "应为表",
    "model": "应为表",
    "path": "应为路径",
}


def problem_text(kind: str, message: str) -> Text:
    """One validation problem in both languages."""
    if kind == "extra_forbidden":
        return Text(_PROBLEM_ZH[kind], "unknown key (misspelt?)")
    if kind == "missing":
        return Text(_PROBLEM_ZH[kind], "required key is missing")
    zh = _PROBLEM_ZH.get(kind) or _TYPE_ZH.get(kind.split("_")[0] if kind.endswith(("_type", "_parsing")) else "")
    return Text(zh or "取值无效", message)


def where(path: Path, line: int | None, loc: tuple[Any, ...]) -> str:
    """`file:line: key` for a problem or a warning."""
    return f"{path}:{line}: {dotted(loc)}" if line else f"{path}: {dotted(loc) or '(top level)'}"


def explain(path: Path, text: str, error: ValidationError, prefix: tuple[Any, ...] = ()) -> list[str]:
    """One readable line per problem: file:line: key: what is wrong (中文 / English)."""
    lines = key_lines(text)
    out = []
    for err in error.errors():
        loc = (*prefix, *err["loc"])
        # pydantic puts union/model branch names in loc; they are not keys in the file.
        loc = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("function-")))
        line = locate(lines, loc)
        out.append(f"{where(path, line, loc)}: {both(problem_text(err['type'], err['msg']), one_line=True)}")
    return out


def is_absolute(path: PurePath) -> bool:
    """Absolute here or on Windows (C:\\…, \\\\server\\share): a Windows agent's paths are checked on Linux too."""
    return path.is_absolute() or bool(PureWindowsPath(str(path)).drive) or str(path).startswith("\\\\")


def resolve_paths(value: Any, base: Path) -> Any:
    """Every path-typed value in a validated model made absolute against `base` (the config file's folder).

    Returns the same object when nothing changes, else a copy; str-typed keys that may hold a path
    (a clamd socket or HOST:PORT) are left alone.
    """
    if isinstance(value, PurePath):
        return value if is_absolute(value) else (base / value).resolve()
    if isinstance(value, BaseModel):
        update = {}
        for name in type(value).model_fields:
            old = getattr(value, name)
            new = resolve_paths(old, base)
            if new is not old:
                update[name] = new
        return value.model_copy(update=update) if update else value
    if isinstance(value, (list, tuple)):
        items = [resolve_paths(v, base) for v in value]
        if all(a is b for a, b in zip(items, value, strict=True)):
            return value
        return type(value)(items)
    if isinstance(value, dict):
        changed = {k: resolve_paths(v, base) for k, v in value.items()}
        return changed if any(changed[k] is not value[k] for k in value) else value
    return value


def paths_in(value: Any) -> list[Path]:
    """Every path-typed value in a validated model (after resolve_paths: all absolute)."""
    if isinstance(value, PurePath):
        return [Path(value)]
    if isinstance(value, BaseModel):
        return [p for name in type(value).model_fields for p in paths_in(getattr(value, name))]
    if isinstance(value, (list, tuple)):
        return [p for v in value for p in paths_in(v)]
    if isinstance(value, dict):
        return [p for v in value.values() for p in paths_in(v)]
    return []


def validate(model: type[BaseModel], data: Any, path: Path, text: str, prefix: tuple[Any, ...] = ()) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("\n".join(explain(path, text, exc, prefix))) from None
