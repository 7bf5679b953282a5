"""Flag value types and the parser classes of the ``extmem`` command (plain constants only)."""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from extmem._units import parse_size
from extmem.errors import OptionError


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows each option's default (when it has one and the help does not say it) and keeps the examples' lines."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if action.required and action.option_strings:
            return f"{text} (required)"
        if (
            default is None
            or default is False
            or default == []
            or default == argparse.SUPPRESS
            or "default" in text
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)"


class SuggestingParser(argparse.ArgumentParser):
    """An argument parser that suggests the closest command or flag for a mistyped one."""

    def error(self, message: str) -> NoReturn:
        hint = suggestion(self, message)
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}{hint}\n")


def suggestion(parser: argparse.ArgumentParser, message: str) -> str:
    choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if choice:
        options = re.findall(r"'?([\w-]+)'?", choice.group(2))
        close = difflib.get_close_matches(choice.group(1), options, n=1)
        return f"; did you mean '{close[0]}'?" if close else ""
    unknown = re.search(r"unrecognized arguments: (.*)", message)
    if unknown:
        flags = [flag for action in parser._actions for flag in action.option_strings]
        words = unknown.group(1).split()
        for word in words:
            if word.startswith("-"):
                close = difflib.get_close_matches(word.split("=")[0], flags, n=1, cutoff=0.75)
                return f"; did you mean {close[0]}?" if close else f"; '{parser.prog} --help' lists its flags"
        if "--param" in flags and any("=" in word for word in words):
            return "; --param takes one KEY=VALUE: repeat --param for each parameter"
    return ""


def param(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        msg = f"expected KEY=VALUE, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    for convert in (int, float):
        try:
            return key, convert(raw)
        except ValueError:
            pass
    if raw.startswith(("{", '[["')):  # constraints by feature name: {"donor_score": 1}, [["a", "b"], ["c"]]
        try:
            return key, json.loads(raw)
        except json.JSONDecodeError as exc:
            msg = f"the value of {key} is not valid JSON ({exc.msg} at character {exc.pos}): {raw!r}"
            raise argparse.ArgumentTypeError(msg) from None
    return key, {"true": True, "false": False}.get(raw.lower(), raw)


def label_map(text: str) -> dict[str, int]:
    mapping: dict[str, int] = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip().isdigit():
            msg = f"expected name=id pairs like neither=0,donor=1,acceptor=2; got {item!r}"
            raise argparse.ArgumentTypeError(msg)
        if name.strip() in mapping:
            msg = f"the label {name.strip()!r} is given more than once"
            raise argparse.ArgumentTypeError(msg)
        mapping[name.strip()] = int(value)
    return mapping


def checked(convert: Callable[[str], Any], valid: Callable[[Any], bool], expected: str) -> Callable[[str], Any]:
    """An argparse ``type`` converting a flag value and refusing it unless ``valid``."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except (ValueError, OptionError):
            value = None
        if value is None or not valid(value):
            msg = f"expected {expected}, got {text!r}"
            raise argparse.ArgumentTypeError(msg)
        return value

    return parse


fraction = checked(float, lambda value: 0 < value < 1, "a fraction between 0 and 1")
positive = checked(int, lambda value: value > 0, "a positive integer")
non_negative = checked(int, lambda value: value >= 0, "a non-negative integer")
size = checked(parse_size, lambda value: value > 0, "a size such as 2GiB, 1.5GB or 800MiB")
