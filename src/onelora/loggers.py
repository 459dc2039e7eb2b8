"""What the configured loggers need before a run starts, checked with the other settings.

Weights & Biases online needs credentials: without them wandb stops the run with a ``UsageError``
when the trainer is built (after the data, the weights and any pre-training), or waits at a login
prompt. Checked up front instead, naming the key and the two fixes.
"""

from __future__ import annotations

import os
from omegaconf import DictConfig

from .config import ConfigError, plain

#: wandb's run modes, and those that send nothing, so need no login
MODES = ("online", "offline", "disabled", "shared")
OFFLINE_MODES = ("offline", "disabled")


def check_loggers(cfg: DictConfig) -> None:
    for name, node in (plain(cfg.get("logger")) or {}).items():
        if isinstance(node, dict) and str(node.get("_target_", "")).endswith("WandbLogger"):
            mode = node.get("mode") or os.environ.get("WANDB_MODE") or "online"
            if str(mode) not in MODES:
                raise ConfigError(f"logger.{name}.mode: must be one of {', '.join(MODES)}, got {mode!r}")
            if str(mode) not in OFFLINE_MODES and not wandb_credentials():
                raise ConfigError(
                    f"logger.{name}.mode: '{mode}' needs a W&B login and none was found: run `wandb login` once "
                    f"(or set WANDB_API_KEY), or leave logger.{name}.mode at its default, offline "
                    "(runs land in the run dir; `wandb sync` them later)"
                )


def wandb_credentials() -> bool:
    """True when wandb would find an API key without asking: WANDB_API_KEY, an identity token file,
    ~/.netrc or wandb's settings (as ``wandb.init`` looks for them)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    try:
        import wandb
        from wandb.sdk.lib import wbauth
    except ImportError:  # no wandb: the logger fails on its own import, with its own message
        return True
    try:
        host = wandb.setup().settings.base_url
        return wbauth.authenticate_session(host=host, source="onelora", prompt=False, update_session=False) is not None
    except Exception:  # another wandb version: let wandb.init decide
        return True
