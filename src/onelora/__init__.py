"""onelora: reproduce, extend and challenge 1LoRA (arXiv 2503.08333)."""

import os

from omegaconf import OmegaConf

__version__ = "0.1.0"

# `${cwd:}` in configs: the directory run.py was started from. Unlike `${hydra:runtime.cwd}` it
# also resolves where Hydra's runtime is not set yet (a multirun's sweep directory).
if not OmegaConf.has_resolver("cwd"):
    OmegaConf.register_new_resolver("cwd", os.getcwd)
