"""What a method is, as data: the per-linear update plus the BitFit / DiffFit / norms parts.

Every method of the paper, and every 1LoRA combination of Tables S11 and S12, is one
``MethodSpec``: ``onelora+bias+norms`` is ``linear="onelora", bias=True, norms=True``. The YAML
files under ``conf/method/`` are these fields.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

from .base import ADAPTER_KINDS, AdapterConfigError


@dataclass
class MethodSpec:
    name: str
    #: per-linear update kind (a key of ADAPTER_KINDS), or None for methods without one
    linear: str | None = None
    #: keyword options of that kind (r, alpha, dropout, seed, size_rule, impl, ...)
    options: dict[str, Any] = field(default_factory=dict)
    #: train the target linears' biases (BitFit; a zero bias is added where a layer has none)
    bias: bool = False
    #: a trainable per-output scale on the target linears (DiffFit's gamma), initialised to 1
    gamma: bool = False
    #: train the affine parameters of every normalisation layer
    norms: bool = False
    #: train every parameter of the model
    full: bool = False
    #: name of the model's target set the linear update / bias / gamma go to
    targets: str = "linear"
    #: target set for gamma if it differs (LLaMA's DiffFit also scales lm_head); None = ``targets``
    gamma_targets: str | None = None
    #: name of the model's module set whose modules train in full (``head``'s "probe": the depth
    #: head's last layers, a causal LM's lm_head; empty for classifiers, whose head always trains)
    modules: str | None = None

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "MethodSpec":
        """Build from a method config; keys that are not spec fields (lr, ...) are ignored."""
        cfg = dict(cfg)
        known = {f.name for f in fields(cls)}
        spec = cls(**{k: v for k, v in cfg.items() if k in known})
        spec.options = dict(spec.options or {})
        spec.validate()
        return spec

    def validate(self) -> None:
        """Check the method without a model: the kind exists, its options are ones it takes and
        their values are in range (rank >= 1, dropout in [0, 1), impl / size_rule among the
        allowed ones, ...). What depends on a layer's shape is checked by ``inject``."""
        if self.linear is not None and self.linear not in ADAPTER_KINDS:
            raise AdapterConfigError(
                f"method '{self.name}': unknown linear adapter '{self.linear}'; "
                f"available: {', '.join(sorted(ADAPTER_KINDS))}"
            )
        if self.full and (self.linear or self.bias or self.gamma):
            raise AdapterConfigError(f"method '{self.name}': full fine-tuning does not combine with adapters")
        if not isinstance(self.options, Mapping):
            raise AdapterConfigError(f"method '{self.name}': options must be a mapping, got {self.options!r}")
        try:
            ADAPTER_KINDS[self.linear or "none"].check_options(**self.options)
        except AdapterConfigError as err:
            raise AdapterConfigError(f"method '{self.name}': {err}") from None

    @property
    def wraps_linears(self) -> bool:
        return self.linear is not None or self.bias or self.gamma

    @property
    def parts(self) -> list[str]:
        """The method's ingredients, e.g. ['onelora', 'bias', 'norms'] (recorded with results)."""
        out = [self.linear] if self.linear else []
        out += [p for p in ("bias", "gamma", "norms", "full") if getattr(self, p)]
        out += [f"modules:{self.modules}"] if self.modules else []
        return out or ["head"]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def update_differences(self, other: "MethodSpec") -> list[str]:
        """The settings in which ``other`` computes another update than this method, each as
        ``key: this vs other``. The name, options that only choose how the update is computed
        (1LoRA's ``impl``) and options left at their default do not count."""
        kind = ADAPTER_KINDS.get(self.linear or "none")
        skip = set(getattr(kind, "execution_options", ()))
        defaults = kind.option_defaults() if kind is not None else {}
        out = []
        mine, theirs = self.to_dict(), other.to_dict()
        for key in mine:
            if key not in ("name", "options") and mine[key] != theirs[key]:
                out.append(f"method.{key}: {mine[key]!r} vs {theirs[key]!r}")
        if self.linear == other.linear:
            for option in sorted(set(self.options) | set(other.options)):
                a, b = (o.get(option, defaults.get(option)) for o in (self.options, other.options))
                if option not in skip and a != b:
                    out.append(f"method.options.{option}: {a!r} vs {b!r}")
        return out
