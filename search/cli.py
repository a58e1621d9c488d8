"""What every command's parser shares: its name, its one-line purpose and examples in --help."""
from __future__ import annotations

import argparse


def command_parser(command: str, doc: str | None, *examples: str) -> argparse.ArgumentParser:
    """`python -m search.COMMAND --help` says what it does (the module docstring's first line) and how to call it."""
    epilog = "examples:\n" + "\n".join(f"  python -m search.{command} {example}" for example in examples) if examples else None
    return argparse.ArgumentParser(
        prog=f"python -m search.{command}", description=(doc or "").split("\n")[0], epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
