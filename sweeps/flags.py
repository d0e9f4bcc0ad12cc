"""Command-line flags generated from a config dataclass: one flag per field, named after it (--image-size for
image_size), typed by its annotation, helped by the field's own comment, grouped by the class's "# ----"
section comments. The flags and the YAML keys then cannot drift apart: adding a field adds its flag.

Values: bools are --x / --no-x; tuples are comma-separated (--synthetic-ratios 0.5,1,2); "none" clears an
optional value. Only flags the user gives are returned (argparse.SUPPRESS), so YAML values stay in force.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
import re
import tokenize
import typing


def field_comments(cls) -> tuple[dict[str, str], dict[str, str]]:
    """({field: its trailing comment}, {field: its section}) read from the class's source."""
    src = inspect.getsource(cls)
    comments, sections, section = {}, {}, "settings"
    pending: str | None = None
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.COMMENT:
            m = re.match(r"#\s*-{2,}\s*(.+)", tok.string)
            if m:
                section = m.group(1).strip()
            elif pending:
                comments[pending] = tok.string.lstrip("#").strip()
                pending = None
        elif tok.type == tokenize.NAME and tok.start[1] == 4 and tok.line.strip().startswith(tok.string + ":"):
            pending = tok.string
            sections[tok.string] = section
    return comments, sections


def _scalar(kind, text: str, name: str):
    text = text.strip()
    if kind is bool:
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (true/false)")
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid {kind.__name__}") from None


def _parser_for(hint, name: str):
    """argparse `type=` callable for a field's annotation (tuples: comma-separated elements)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        inner = [a for a in args if a is not type(None)][0]
        parse_inner = _parser_for(inner, name)
        return lambda text: None if text.strip().lower() in ("none", "null", "") else parse_inner(text)
    if origin is tuple:
        kinds = [a for a in args if a is not Ellipsis]

        def parse_tuple(text: str):
            items = [t for t in text.split(",") if t.strip()]
            if Ellipsis not in args and len(items) != len(kinds):
                raise argparse.ArgumentTypeError(f"expected {len(kinds)} comma-separated values, got {text!r}")
            return tuple(_scalar(kinds[min(i, len(kinds) - 1)], t, name) for i, t in enumerate(items))
        return parse_tuple
    return lambda text: _scalar(hint, text, name)


def _metavar(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        return "A,B,..." if Ellipsis in args else ",".join("ABCD"[i] for i in range(len(args)))
    if origin is not None:
        return _metavar([a for a in args if a is not type(None)][0])
    return {int: "N", float: "X", str: "TEXT"}.get(hint, "VALUE")


def add_config_flags(parser: argparse.ArgumentParser, cls, skip=()) -> None:
    """One flag per field of dataclass `cls` (except `skip`), grouped by its source's section comments."""
    comments, sections = field_comments(cls)
    hints = typing.get_type_hints(cls)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        group = groups.setdefault(sections.get(f.name, "settings"),
                                  parser.add_argument_group(sections.get(f.name, "settings")))
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        shown = ",".join(str(v) for v in default) if isinstance(default, tuple) else default
        text = f"{comments.get(f.name, '')} (default: {shown})".replace("%", "%%")
        hint = hints[f.name]
        if f.name in getattr(cls, "REPEATABLE", ()):  # --external A=x --external B=y: one value per flag
            group.add_argument(flag, action="append", metavar="VALUE", help=text + "; give the flag once per value",
                               default=argparse.SUPPRESS)
        elif hint is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, help=text, default=argparse.SUPPRESS)
        else:
            group.add_argument(flag, type=_parser_for(hint, f.name.replace("_", "-")), metavar=_metavar(hint),
                               help=text, default=argparse.SUPPRESS)

