"""``python -m bench``: the table benchmark (bench/cli.py), or with ``--scale`` bench.scale.

The dispatch lives here so that neither cli nor scale imports the other.
"""

from __future__ import annotations

import sys

from bench import cli, scale


def main(argv: list[str] | None = None) -> int:
    args = cli.parser().parse_args(argv)
    if args.scale:
        return scale.main(["--quick"] if args.quick else [])
    try:
        return cli.run(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
