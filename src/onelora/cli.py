"""How run.py reports errors: a user's mistake in one line, a sweep that goes on past a failure, a
terminated run that says so (and exits non-zero)."""

from __future__ import annotations

import logging
import sys
import traceback

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from .adapters import AdapterConfigError
from .config import ConfigError
from .cache import CacheNotWritableError
from .data.errors import DamagedDataError, MissingDataError
from .models.weights import MissingWeightsError, UnreadableWeightsError
from .places import PlaceError, explain
from .runlock import RunLockedError

log = logging.getLogger(__name__)

#: errors that are about the user's setup, not a bug: shown as one line, without a traceback
USER_ERRORS = (ConfigError, MissingDataError, DamagedDataError, MissingWeightsError, UnreadableWeightsError,
               AdapterConfigError, RunLockedError, PlaceError, CacheNotWritableError)


def user_message(err: BaseException, cfg: DictConfig) -> str | None:
    """The one line for a user's mistake (a bad setting, a path that cannot be used), or None for a bug."""
    if isinstance(err, USER_ERRORS):
        return str(err)
    return explain(err, cfg)  # an OSError on one of the run's configured places


def is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_from_cli(cfg: DictConfig) -> None:
    from .pipeline import RunTerminated
    from .runner import run

    try:
        run(cfg)
    except RunTerminated as err:  # the whole process was asked to stop: a sweep stops too
        print(f"onelora: {err}", file=sys.stderr, flush=True)
        sys.exit(err.exit_status)
    except Exception as err:
        line = user_message(err, cfg)
        short = line is not None
        message = f"onelora: error: {line}" if short else f"onelora: {type(err).__name__}: {err}"
        if is_multirun():
            # one failed run must not hide the others: its results.json says "failed"; go on
            from .settings import run_dir_of
            from .sweeps import log_event

            log_event("failed", run_dir_of(cfg), error=message)
            log.error("%s\n%s", message, "" if short else traceback.format_exc())
            return
        if not short:
            raise
        print(message, file=sys.stderr, flush=True)
        sys.exit(1)
