"""onelora: reproduce, extend and challenge 1LoRA (arXiv 2503.08333)."""

__version__ = "0.1.0"
