"""onelora: reproduce, extend and challenge 1LoRA (arXiv 2503.08333)."""

import os
import tempfile

from omegaconf import OmegaConf

__version__ = "0.2.0"

# `${cwd:}` in configs: the directory run.py was started from. Unlike `${hydra:runtime.cwd}` it
# also resolves where Hydra's runtime is not set yet (a multirun's sweep directory).
if not OmegaConf.has_resolver("cwd"):
    OmegaConf.register_new_resolver("cwd", os.getcwd)
#: modes that train nothing and write nothing under results/ (Hydra's run and sweep dirs, and .hydra,
#: go to a temporary folder)
DRY_MODES = ("count", "plan")
if not OmegaConf.has_resolver("onelora_run_dir"):
    OmegaConf.register_new_resolver(
        "onelora_run_dir",
        lambda mode, path: os.path.join(tempfile.gettempdir(), f"onelora-{mode}") if mode in DRY_MODES else path,
    )
if not OmegaConf.has_resolver("onelora_if_train"):
    OmegaConf.register_new_resolver("onelora_if_train", lambda mode, yes, no: no if mode in DRY_MODES else yes)
