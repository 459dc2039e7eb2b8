"""Lightning strategies that a trainer config builds through ``_target_`` (conf/trainer/fsdp.yaml).

FSDP over a frozen base with trainable adapters: a wrapped unit (one LlamaDecoderLayer) then holds
parameters that train and parameters that do not, which FSDP's flattened parameters accept only with
``use_orig_params=True`` (each original parameter keeps its own ``requires_grad`` and the optimizer
sees only the trainable ones). Layer classes are given by dotted path, as YAML can name them.
"""

from __future__ import annotations

from typing import Any, Iterable

from hydra.utils import get_class


def fsdp(wrap: Iterable[str] = (), *, use_orig_params: bool = True, **kwargs: Any):
    """Lightning's ``FSDPStrategy``, each class in ``wrap`` (dotted paths) its own FSDP unit."""
    from lightning.pytorch.strategies import FSDPStrategy

    if not use_orig_params:
        raise ValueError("fsdp: use_orig_params must stay true (a frozen base with trainable adapters "
                         "puts parameters with and without requires_grad in one FSDP unit)")
    classes = {get_class(path) for path in wrap}
    return FSDPStrategy(auto_wrap_policy=classes or None, use_orig_params=True, **kwargs)
