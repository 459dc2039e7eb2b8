"""Keep a run's console readable: drop library notices that say nothing about the experiment."""

from __future__ import annotations

import logging
import warnings

#: Lightning's start-up and restore notices: true, but they crowd out the run's own summary
QUIET_INFO = (
    "GPU available:", "TPU available:", "HPU available:", "Loading `train_dataloader` to estimate",
    "Restoring states from the checkpoint path", "Loaded model weights from the checkpoint",
    "Restored all states from the checkpoint", "`weights_only` was not set",
)

#: the Lightning loggers that emit those notices
NOISY_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.trainer.connectors.checkpoint_connector")

NOISE = (
    r"The `srun` command is available on your system but is not used",  # Lightning, on SLURM login nodes
    r".*isinstance\(treespec, LeafSpec\)",  # torch pytree deprecation inside Lightning
    r".*does not have many workers which may be a bottleneck",  # tiny in-memory datasets
    r".*The number of training batches \(\d+\) is smaller than the logging interval",
    r"Checkpoint directory .* exists and is not empty",  # a resumed run writes into its own checkpoints
    r"Found \d+ module\(s\) in eval mode at the start of training",  # frozen parts by design (a VAE, FID features)
)


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "💡 Tip" not in message and not (record.levelno <= logging.INFO and message.startswith(QUIET_INFO))


_TIPS = _DropTips()


def quiet_library_noise() -> None:
    """Idempotent: a sweep calls it once per run, but filters are added once per process."""
    for pattern in NOISE:
        warnings.filterwarnings("ignore", message=pattern)  # warnings de-duplicates equal filters
    for name in NOISY_LOGGERS:  # a logger's filter sees only its own records, not its children's
        logging.getLogger(name).addFilter(_TIPS)  # a no-op when present
    if logging.getLogger().handlers:  # Hydra configured logging: one handler set, no duplicate lines
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            logger = logging.getLogger(name)
            logger.handlers = [h for h in logger.handlers if isinstance(h, logging.FileHandler)]
            logger.propagate = True
