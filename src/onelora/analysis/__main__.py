"""The paper's analyses of finished runs, one command each:

    python -m onelora.analysis pca_alignment --full <run_dir> --lora <run_dir> --out reports   (Fig. 9)
    python -m onelora.analysis calibration <run_dir>... --bins 15 --out reports                 (Fig. 11)
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from onelora.analysis import calibration, pca_alignment
from onelora.analysis.rundir import RunDirError
from onelora.reporting.index import write_index

ANALYSES = {"pca_alignment": pca_alignment, "calibration": calibration}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m onelora.analysis", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="analysis", required=True, metavar="{" + ",".join(ANALYSES) + "}")
    for name, module in ANALYSES.items():
        module.add_arguments(sub.add_parser(name, help=module.__doc__.strip().splitlines()[0], description=module.__doc__,
                                            formatter_class=argparse.RawDescriptionHelpFormatter))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        status = ANALYSES[args.analysis].run(args)
    except RunDirError as err:
        print(f"onelora.analysis {args.analysis}: error: {err}", file=sys.stderr)
        return 2
    if not status and getattr(args, "out", None):  # the folder's README lists the new files too
        write_index(args.out)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
