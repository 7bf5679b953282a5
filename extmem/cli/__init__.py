"""The ``extmem`` command line: parses flags, calls one library function per command, prints a summary."""

from extmem.cli._main import main

__all__ = ["main"]
