"""The ``emdenoise`` console script: a Ctrl-C while the command loads ends with one line, as a later one does."""

import sys


def main() -> int:
    try:
        from .cli import main as run
    except KeyboardInterrupt:
        print("emdenoise: interrupted", file=sys.stderr)
        return 130
    return run()
