"""onelora: reproduce, extend and challenge 1LoRA (arXiv 2503.08333)."""

import os
import tempfile

from omegaconf import OmegaConf

__version__ = "0.2.0"


def _uid() -> str:
    return str(os.getuid()) if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")


# `${cwd:}` in configs: the directory run.py was started from. Unlike `${hydra:runtime.cwd}` it
# also resolves where Hydra's runtime is not set yet (a multirun's sweep directory).
if not OmegaConf.has_resolver("cwd"):
    OmegaConf.register_new_resolver("cwd", os.getcwd)
# `mode=count` and `mode=plan` leave nothing under results/: Hydra's run and sweep dirs (its run.log,
# .hydra) go to a temp folder, one per mode and user (a second user on the machine cannot write in the
# first one's); other modes' paths get `~` expanded
#: modes that train nothing and write nothing under results/
DRY_MODES = ("count", "plan")
if not OmegaConf.has_resolver("onelora_run_dir"):
    OmegaConf.register_new_resolver(
        "onelora_run_dir",
        lambda mode, path: os.path.join(tempfile.gettempdir(), f"onelora-{mode}-{_uid()}") if mode in DRY_MODES
        else os.path.expanduser(path),
    )
# `~` in a path from the environment or the command line (no shell expands it there): the user's home,
# not a folder named "~" under the working directory
if not OmegaConf.has_resolver("onelora_path"):
    OmegaConf.register_new_resolver("onelora_path", lambda path: os.path.expanduser(str(path)))
if not OmegaConf.has_resolver("onelora_if_train"):
    OmegaConf.register_new_resolver("onelora_if_train", lambda mode, yes, no: no if mode in DRY_MODES else yes)
