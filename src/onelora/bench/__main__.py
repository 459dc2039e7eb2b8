"""``python -m onelora.bench``: see ``onelora.bench.cli``."""

from .cli import main

main()
