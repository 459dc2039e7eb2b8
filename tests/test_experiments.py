"""Every experiment grid in experiments/ sweeps, quickly, on tiny twins (like lightning-hydra-template's
`experiment=glob(*)` test): one seed, one short epoch, the task's test-size model and data."""

from __future__ import annotations

from pathlib import Path

import pytest

from runs import DIGITS_FAST, ROOT, results, run_cli, twin

pytestmark = pytest.mark.e2e  # subprocess runs of run.py: make test-e2e

EXPERIMENTS = sorted(p.stem for p in (ROOT / "experiments").glob("*.yaml"))


def family_of(experiment: str) -> str:
    """The task family an experiment sweeps (read from the YAML files, so test ids say it: -k depth)."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(ROOT / "experiments" / f"{experiment}.yaml")
    tasks = str((cfg.get("hydra") or {}).get("sweeper", {}).get("params", {}).get("task") or "").split(",")
    for entry in cfg.get("defaults") or []:
        if isinstance(entry, dict) or OmegaConf.is_dict(entry):
            tasks += [str(v) for k, v in entry.items() if str(k).endswith("/task")]

    def family(task: str) -> str | None:  # a task file may take its family from the task it extends
        cfg = OmegaConf.load(ROOT / "conf" / "task" / f"{task}.yaml")
        bases = [d for d in cfg.get("defaults") or [] if isinstance(d, str) and d != "_self_"]
        return (cfg.get("task") or {}).get("family") or next((family(b) for b in bases), None)

    return "-".join(sorted({f for t in tasks if t and (f := family(t))})) or "none"
QUICK = ("seed=0", "task.epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=2",
         "trainer.limit_test_batches=2")


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("experiments_home")


def grid(home: Path, experiment: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"paths.root_dir={home}", f"experiment={experiment}"],
                      return_hydra_config=True)
    return cfg, {k: str(v).split(",") for k, v in cfg.hydra.sweeper.params.items()}


def method_name(method_file: str) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.load(ROOT / "conf" / "method" / f"{method_file}.yaml").name


@pytest.mark.parametrize("experiment", ["fig6", "fig7", "fig8", "table2", "fig2cd", "table_s1", "fig10", "table_s6", "table_s7"])
def test_the_paper_grids_have_four_seeds(home, experiment):
    _, params = grid(home, experiment)
    assert params["seed"] == ["0", "1", "2", "3"]


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=[f"{e}-{family_of(e)}" for e in EXPERIMENTS])
def test_every_experiment_sweeps(home, tmp_path, experiment):
    """Each grid in its own results folder (grids share runs by design: fig6 and fig8 have rows in
    common), with one shared cache for the source-task pre-training. A grid over several tasks
    (the depth transfers) runs on the twin they share."""
    cfg, params = grid(home, experiment)
    tasks, methods = params.get("task", [cfg.task.name]), params["method"]
    extra = ["method.lr=0.01"] if "method.lr" in params else []
    proc = run_cli(tmp_path, "-m", f"experiment={experiment}", *twin(",".join(tasks), home / "data")[1:], *QUICK,
                   *extra, timeout=900, env={"ONELORA_CACHE": str(home / ".cache")})
    summary = proc.stdout.split("Sweep finished: ")[1].splitlines()[0]
    assert summary.startswith(f"{len(methods) * len(tasks)} runs") and "failed" not in summary, summary
    done = {}
    for task in tasks:
        for path in (tmp_path / "results" / task).glob("*/*/seed0*/results.json"):
            record = results(path.parent)
            if record["experiment"] == cfg.experiment_name:
                done[task, record["method"]] = record["status"]
    assert done == {(task, method_name(m)): "completed" for task in tasks for m in methods}


def test_the_parallel_launcher_runs_a_grid_in_worker_processes(home, tmp_path):
    proc = run_cli(tmp_path, "-m", "hydra/launcher=parallel", "method=head,bitfit", *DIGITS_FAST, *QUICK,
                   timeout=900, env={"ONELORA_CACHE": str(home / ".cache"), "ONELORA_PARALLEL_JOBS": "2"})
    assert "Sweep finished: 2 runs: 2 completed" in proc.stdout
    for method in ("head", "bitfit"):
        assert results(tmp_path / "results" / "digits" / "digits_vit" / method / "seed0")["status"] == "completed"
