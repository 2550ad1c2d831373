"""`python -m exchange_operator`: the same as `exchange operator`."""

from __future__ import annotations

import argparse
import sys

from exchange_operator import cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="exchange operator", description=cli.__doc__)
    cli.add_arguments(parser)
    return cli.main(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
