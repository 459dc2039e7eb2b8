"""The one method table (onelora.methods): a new method is one adapter class plus one YAML, and
the counts, the benchmark, the reports and the adapter tests pick it up from there."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from onelora.adapters import ADAPTER_KINDS, inject, register
from onelora.adapters.base import AdditiveAdapter
from onelora.methods import PROJECT_CONF, MethodTableError, method_table
from runs import config

TOY_YAML = """
# Toy: W0 x + b * mean_i x_i (d per layer): a method defined by a test, in a folder of its own.
name: toy
linear: toy_mean
options: {scale: 1.0}
bias: false
gamma: false
norms: false
full: false
targets: linear
gamma_targets: null
lr: null
describe:
  label: Toy
  family: Toy family
  color: "tab:pink"
  order: 25
  compared: true
  per_layer: d
  paper_label: {S12: "Toy (as printed)"}
  bench:
    - {key: toy, label: Toy (bench)}
"""


class ToyMeanLinear(AdditiveAdapter):
    """``W0 x + scale * b * mean(x)``: ``d`` trainable parameters, ``b`` initialised to zeros."""

    adapter_tensor_names = ("toy_b",)

    def __init__(self, base_layer: nn.Module, *, scale: float = 1.0, **kwargs):
        super().__init__(base_layer, **kwargs)
        self.scale = float(scale)
        self.toy_b = nn.Parameter(self._zeros(self.out_features))

    def adapted_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_layer(x) + self.scale * x.mean(-1, keepdim=True) * self.toy_b

    def delta_weight(self) -> torch.Tensor:
        return self.scale * torch.outer(self.toy_b, torch.full((self.in_features,), 1 / self.in_features))


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """The toy class registered and its YAML in a config folder searched before the project's."""
    register("toy_mean")(ToyMeanLinear)
    conf = tmp_path / "conf"
    (conf / "method").mkdir(parents=True)
    (conf / "method" / "toy.yaml").write_text(TOY_YAML)
    monkeypatch.setenv("ONELORA_CONF", f"{conf}{os.pathsep}{PROJECT_CONF}")
    yield conf
    ADAPTER_KINDS.pop("toy_mean", None)


def test_the_project_table_holds_every_method_file():
    table = method_table()
    assert [m.file for m in table.values()][:3] == ["none", "head", "onelora"] and list(table)[-1] == "full"
    assert len(table) == len(list(PROJECT_CONF.glob("method/*.yaml")))
    assert table["onelora+bias+norms"].label == "1LoRA (bias+norms)" and table["onelora+bias+norms"].file == "onelora_bias_norms"


def test_a_new_method_is_one_class_and_one_yaml(toy, tmp_path, capsys):
    from onelora import methods
    from onelora.bench import methods as bench
    from onelora.bench.models import SHAPES, build
    from onelora.reporting import paper, tables

    info = method_table()["toy"]
    assert (info.file, info.label, info.family, info.color, info.label_in("S12")) == (
        "toy", "Toy", "Toy family", "tab:pink", "Toy (as printed)")
    # make count-paper: COUNT_METHODS
    methods.main(["compared"])
    assert capsys.readouterr().out.strip().split(",") == [
        "onelora", "toy", "lora", "lora_qkv", "vera", "dora", "mora1", "mora6", "bitfit", "difffit", "norms", "full"]
    # the count of a run: mode=count through Hydra, the toy YAML found on the search path
    from onelora.count import count
    from onelora.settings import RunSettings

    searchpath = f"hydra.searchpath=[file://{toy}]"
    counted = {m: count(RunSettings.from_config(config(tmp_path, searchpath, "mode=count", f"method={m}")))
               for m in ("toy", "onelora")}
    assert counted["toy"]["adapter_params"] == counted["onelora"]["adapter_params"] > 0  # d per layer, as 1LoRA
    # the benchmark: its row, in the table's order, mergeable, injected into the bench's model
    rows = bench.select(["toy"])
    assert [m.key for m in rows] == ["frozen", "bitfit", "toy"] and rows[-1].label == "Toy (bench)"
    shape = SHAPES["vit_micro"]
    model = bench.apply(rows[-1], build(shape), shape)
    assert bench.count_adapted(model) > 0 and bench.mergeable(rows[-1])
    # the reports: label, family, colour, order, a combination's label
    assert paper.method_label("toy") == "Toy" and paper.method_label("toy", "S12") == "Toy (as printed)"
    assert paper.method_label("toy+bias") == "Toy (bias)" and paper.method_family("toy+bias") == "Toy family"
    assert paper.FAMILY_COLORS[paper.method_family("toy")] == "tab:pink"
    assert paper.METHOD_LABELS["toy"] == "Toy" and "Toy family" in paper.FAMILY_COLORS
    assert sorted(["lora", "toy", "onelora_random", "onelora"], key=tables.method_rank) == [
        "onelora", "toy", "onelora_random", "lora"]


def test_the_adapter_tests_pick_up_a_new_method(toy):
    from adapter_cases import per_layer, per_layer_formulas, shipped_methods, tiny_vit

    cases = shipped_methods()
    assert cases["toy"]["linear"] == "toy_mean"
    from onelora.adapters import MethodSpec

    model = tiny_vit()
    report = inject(model, MethodSpec.from_config({"name": "toy", **cases["toy"]}), head=["head"])
    shapes = [(m.in_features, m.out_features) for n, m in tiny_vit().named_modules()
              if isinstance(m, nn.Linear) and n != "head"]
    assert report.adapter_params == sum(per_layer(per_layer_formulas()["toy"], k, d) for k, d in shapes) == 448


def test_the_descriptive_keys_do_not_change_a_run(tmp_path):
    """describe is read by no run: the spec, the fingerprint (resume, skip) and the learning rate
    are the same whatever it says; the record's config keeps it (results.json round-trips)."""
    from onelora.config import plain
    from onelora.settings import fingerprint
    from onelora.settings import RunSettings

    base = config(tmp_path, "method=lora")
    other = config(tmp_path, "method=lora", "method.describe.label=Renamed", "method.describe.bench=[]")
    a, b = RunSettings.from_config(base), RunSettings.from_config(other)
    assert a.method == b.method and a.lr == b.lr
    assert fingerprint(base) == fingerprint(other)
    assert fingerprint(config(tmp_path, "method=lora", "method.options.r=2")) != fingerprint(base)
    assert plain(other)["method"]["describe"]["label"] == "Renamed"


@pytest.mark.parametrize(("yaml", "error"), [
    ("name: a\nlinear: null\n", r"a\.yaml: no 'describe' block"),
    ("name: a\ndescribe: {label: A, family: F, order: 999}\n", r"a\.yaml: describe\.color is not set"),
    ("name: a\ndescribe: {label: A, family: F, color: red, order: 999, colour: red}\n", r"a\.yaml: describe has no key 'colour'"),
    ("name: a\ndescribe: {label: LoRA, family: F, color: red, order: 999}\n", r"a\.yaml and lora\.yaml are both labelled 'LoRA'"),
    ("name: a\ndescribe: {label: A, family: LoRA, color: red, order: 999}\n", r"family 'LoRA' is coloured 'tab:blue' in lora\.yaml, not 'red'"),
    ("name: a\ndescribe: {label: A, family: F, color: red, order: 999, bench: [{key: lora, label: x}]}\n", r"bench key 'lora' is taken"),
])
def test_a_wrong_describe_block_names_its_file_and_key(tmp_path, monkeypatch, yaml, error):
    (tmp_path / "method").mkdir()
    (tmp_path / "method" / "a.yaml").write_text(yaml)
    monkeypatch.setenv("ONELORA_CONF", f"{tmp_path}{os.pathsep}{PROJECT_CONF}")
    with pytest.raises(MethodTableError, match=error):
        method_table()
