"""Speed and memory benchmark of every method, side by side with peft (issue 5).

``python -m onelora.bench [--quick | --paper-sizes] [--out reports] [--models vit,llama] ...``
writes ``bench.json`` (one record per method, model and batch), ``bench.md`` and PNG charts.
"""

from .cli import main

__all__ = ["main"]
