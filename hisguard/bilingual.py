"""What the command-line tools print for a person: every phrase in Chinese first, then English.

    from hisguard.bilingual import say, fail
    say(Text("已送达 {n} 份报告", "delivered {n} reports"), n=3)     # 已送达 3 份报告 / delivered 3 reports
    fail(Text("配置错误", "configuration error"), detail)           # to stderr

HISGUARD_LANG=zh or HISGUARD_LANG=en prints one language only (both is the default).
"""

from __future__ import annotations

import os
import sys
import unicodedata
from typing import TextIO

from hisguard.plan import Text

LANG_ENV = "HISGUARD_LANG"
ONE_LINE = 100  # columns: a longer pair goes on two lines, Chinese first


def language() -> str:
    """ "zh", "en" or "both" (the default, and for any other value of HISGUARD_LANG)."""
    value = os.environ.get(LANG_ENV, "").strip().lower()
    return value if value in ("zh", "en") else "both"


def width(text: str) -> int:
    """Terminal columns: CJK characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def pad(text: str, columns: int) -> str:
    """Left-justify (and cut) to `columns` terminal columns, counting CJK characters as two."""
    out, used = "", 0
    for ch in text:
        w = 2 if unicodedata.east_asian_width(ch) in "WF" else 1
        if used + w > columns:
            break
        out, used = out + ch, used + w
    return out + " " * (columns - used)


def both(text: Text, one_line: bool = False, **values: object) -> str:
    """The phrase as printed: `zh / en` on one line, or zh above en when long (unless `one_line`)."""
    if values:
        text = text.format(**values)
    lang = language()
    if lang != "both":
        return text.get(lang)
    if text.zh == text.en:
        return text.zh
    if not one_line and ("\n" in text.zh or "\n" in text.en or width(text.zh) + width(text.en) + 3 > ONE_LINE):
        return f"{text.zh}\n{text.en}"
    return f"{text.zh} / {text.en}"


def compact(text: Text, **values: object) -> str:
    """A table heading or a state word: `zh en` with a space (one language if HISGUARD_LANG says so)."""
    if values:
        text = text.format(**values)
    lang = language()
    return text.get(lang) if lang != "both" or text.zh == text.en else f"{text.zh} {text.en}"


def say(text: Text, detail: str = "", *, file: TextIO | None = None, **values: object) -> None:
    """Print the phrase (to stdout), then `detail` (paths, numbers, a tool's own message) if given."""
    line = both(text, **values)
    if detail:
        line = f"{line}:\n{detail}" if "\n" in detail or "\n" in line else f"{line}: {detail}"
    print(line, file=file or sys.stdout, flush=True)


def fail(text: Text, detail: str = "", **values: object) -> None:
    """An error for a person, on stderr."""
    say(text, detail, file=sys.stderr, **values)


def heading(text: Text, **values: object) -> str:
    """A section heading: `事件 / incidents`, followed by a colon."""
    return both(text, one_line=True, **values) + ":"


CONFIG_ERROR = Text("配置错误", "configuration error")
WARNINGS = Text("警告", "warnings")
