"""The ``vi`` command line."""

import sys


def main(argv: list[str] | None = None) -> int:
    del argv
    print("vi: command line not built yet", file=sys.stderr)
    return 2
