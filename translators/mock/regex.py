"""A string for a JSON Schema `pattern`: the given text when it matches, else one built from the regex.

Best effort: the shortest string Python's own regex parser (`re._parser`)
allows — the minimum of every repeat, the first branch of an alternation, the
first member of a class (or a common character outside a negated one);
anchors, look-arounds and back-references emit nothing. When the result does
not match after all, the caller keeps its text.
"""

from __future__ import annotations

import re
from typing import Any


def string_matching(pattern: str, value: str, variant: int) -> str:
    """`value` if `pattern` finds a match in it, else a built string that does (else `value`)."""
    try:
        regex = re.compile(pattern)
    except re.error:
        return value
    if regex.search(value):
        return value
    built = _from_regex(pattern, variant)
    return built if built is not None and regex.search(built) else value


def _from_regex(pattern: str, variant: int) -> str | None:
    """The shortest string the parsed regex allows (Python's `re` parser; best effort)."""
    try:
        from re import _constants as c  # type: ignore[attr-defined]
        from re import _parser as sre  # type: ignore[attr-defined]

        return _emit(sre.parse(pattern), c, variant)
    except (ImportError, AttributeError, TypeError, ValueError, IndexError, re.error, RecursionError):
        return None  # a construct this walk does not know: the caller keeps the plain text


def _emit(tokens: Any, c: Any, variant: int) -> str:
    out = []
    for op, arg in tokens:
        if op is c.LITERAL:
            out.append(chr(arg))
        elif op is c.NOT_LITERAL:
            out.append("a" if arg != ord("a") else "b")
        elif op is c.ANY:
            out.append("a")
        elif op is c.IN:
            out.append(_from_class(arg, c, variant))
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", None)):
            low, _, sub = arg
            out.append(_emit(sub, c, variant) * low)
        elif op is c.SUBPATTERN:
            out.append(_emit(arg[-1], c, variant))
        elif op is getattr(c, "ATOMIC_GROUP", None):
            out.append(_emit(arg, c, variant))
        elif op is c.BRANCH:
            out.append(_emit(arg[1][0], c, variant))
        elif op is c.CATEGORY:
            out.append(_from_category(arg, c))
        # AT (anchors), ASSERT/ASSERT_NOT (look-arounds), GROUPREF: nothing to emit
    return "".join(out)


def _from_class(items: Any, c: Any, variant: int) -> str:
    if items and items[0][0] is c.NEGATE:
        excluded = items[1:]
        for char in "aA0x_ -":
            if not any(_in_item(char, op, arg, c) for op, arg in excluded):
                return char
        return "~"
    if not items:
        return "a"
    op, arg = items[variant % len(items)]
    if op is c.LITERAL:
        return chr(arg)
    if op is c.RANGE:
        return chr(min(arg[0] + variant, arg[1]))
    if op is c.CATEGORY:
        return _from_category(arg, c)
    return "a"


def _in_item(char: str, op: Any, arg: Any, c: Any) -> bool:
    if op is c.LITERAL:
        return ord(char) == arg
    if op is c.RANGE:
        return arg[0] <= ord(char) <= arg[1]
    if op is c.CATEGORY:
        return bool(re.fullmatch(_CATEGORY_REGEX.get(str(arg), "."), char))
    return True


_CATEGORY_REGEX = {"CATEGORY_DIGIT": r"\d", "CATEGORY_NOT_DIGIT": r"\D", "CATEGORY_SPACE": r"\s",
                   "CATEGORY_NOT_SPACE": r"\S", "CATEGORY_WORD": r"\w", "CATEGORY_NOT_WORD": r"\W"}


def _from_category(arg: Any, c: Any) -> str:
    return {"CATEGORY_DIGIT": "0", "CATEGORY_NOT_DIGIT": "a", "CATEGORY_SPACE": " ", "CATEGORY_NOT_SPACE": "a",
            "CATEGORY_WORD": "a", "CATEGORY_NOT_WORD": "-"}.get(str(arg), "a")
