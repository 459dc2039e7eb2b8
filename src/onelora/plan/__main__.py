"""``python -m onelora.plan``: every paper grid planned -> reports/plan.md and plan.json (``make plan``).

    python -m onelora.plan --out reports --jobs 2
    python -m onelora.plan --grids table_s7 fig6 --no-claims
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Sequence

from .paper import GRIDS
from .report import build


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m onelora.plan", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("reports"), help="folder for plan.md and plan.json")
    parser.add_argument("--jobs", type=int, default=1, help="processes tracing runs in parallel")
    parser.add_argument("--grids", nargs="+", choices=[g for _, g in GRIDS], help="only these grids (default: all)")
    parser.add_argument("--no-claims", action="store_true", help="skip the paper's memory claims")
    default_cache = Path(os.environ.get("ONELORA_CACHE", ".cache")) / "plan"
    parser.add_argument("--cache", type=Path, default=default_cache, help=f"plan records cache (default {default_cache})")
    parser.add_argument("--no-cache", action="store_true", help="trace every run again")
    args = parser.parse_args(argv)
    build(args.out, cache=None if args.no_cache else args.cache, jobs=args.jobs, grids=args.grids, claims=not args.no_claims)


if __name__ == "__main__":
    main()
