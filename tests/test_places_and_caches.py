"""The places a run reads and writes (paths.results_dir / ONELORA_RESULTS, paths.cache_dir /
ONELORA_CACHE, paths.data_dir / ONELORA_DATA and the keys under them): a place that cannot be used
is one line naming the path, the key, the variable and the fix, found before any work; and a cache
shared by a team serves a complete file to a user who cannot write in it."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runs import CIFAR_TINY, ROOT, config, make_foreign, run_cli, run_inprocess, unprivileged_prefix

SRC = str(ROOT / "src")


def _explain(err: BaseException, cfg) -> str:
    from onelora.cli import user_message

    line = user_message(err, cfg)
    assert line is not None and "\n" not in line, line
    return line


# -- results -----------------------------------------------------------------------------------------

def test_a_results_dir_that_is_a_file_is_one_line_naming_it_and_its_variable(tmp_path, monkeypatch):
    """main: NotADirectoryError traceback."""
    from onelora.places import PlaceError, check_places

    blocker = tmp_path / "results.txt"
    blocker.write_text("not a folder")
    monkeypatch.setenv("ONELORA_RESULTS", str(blocker))
    cfg = config(tmp_path, *CIFAR_TINY)
    with pytest.raises(NotADirectoryError) as err:
        run_inprocess(tmp_path, *CIFAR_TINY)
    line = _explain(err.value, cfg)
    assert f"paths.results_dir={blocker} (set by ONELORA_RESULTS)" in line
    assert f"{blocker} is a file, not a folder" in line and "ONELORA_RESULTS=<dir>" in line
    with pytest.raises(PlaceError, match=f"{blocker} is a file, not a folder"):  # the CLI's check, before Hydra writes
        check_places(cfg, tmp_path / "results.txt" / "cifar10" / "run")


def test_a_read_only_results_dir_is_one_line_at_the_command_line(tmp_path):
    """main: four chained PermissionError tracebacks from Hydra creating the run dir. Now the CLI's
    Hydra callback checks the folder before Hydra writes anything."""
    prefix = unprivileged_prefix()
    results = tmp_path / "results"
    results.mkdir()
    make_foreign(results)
    proc = subprocess.run([*prefix, sys.executable, str(ROOT / "run.py"), *CIFAR_TINY],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "ONELORA_ROOT": str(tmp_path), "ONELORA_RESULTS": str(results),
                               "PYTHONPATH": SRC})
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"onelora: error: cannot use {results / 'cifar10'} (under paths.results_dir={results} "
                               "(set by ONELORA_RESULTS)): permission denied for user ")
    assert f"`ls -ld {results}`" in lines[0] and "ONELORA_RESULTS=<dir>" in lines[0]
    assert not (results / "cifar10").exists()


# -- cache ---------------------------------------------------------------------------------------------

def test_a_cache_dir_that_is_a_file_is_found_before_any_work(tmp_path, monkeypatch):
    """main: NotADirectoryError after the data was read, when pre-training began."""
    from onelora.places import PlaceError, check_places

    blocker = tmp_path / "cache-file"
    blocker.write_text("")
    monkeypatch.setenv("ONELORA_CACHE", str(blocker))
    cfg = config(tmp_path, "+twin=digits")
    with pytest.raises(PlaceError) as err:
        check_places(cfg, tmp_path / "results" / "run")
    assert str(err.value) == (
        f"cannot use paths.cache_dir={blocker} (set by ONELORA_CACHE): it exists but is not a folder (a file, or a "
        "link to nowhere). To fix it, point paths.cache_dir=<dir> (or ONELORA_CACHE=<dir>) at a folder you can write to")


_CACHE_USER = """
import sys
from pathlib import Path
sys.path.insert(0, {src!r})
from onelora.cache import build_once

def build(path):
    path.with_name(".tmp").write_bytes(b"built by " + sys.argv[2].encode())
    path.with_name(".tmp").replace(path)

try:
    path = build_once(Path(sys.argv[1]), build, complete=lambda p: p.is_file(), what="the test weights")
    print(path.read_bytes().decode())
except Exception as err:
    print(type(err).__name__, err)
"""


def _as_second_user(path: Path, name: str) -> str:
    script = _CACHE_USER.format(src=SRC)
    proc = subprocess.run([*unprivileged_prefix(), sys.executable, "-c", script, str(path), name],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_a_teammates_cached_file_serves_a_user_who_cannot_write_in_the_cache(tmp_path):
    """main: the second user failed on PermissionError opening the cache's .lock (the lock was
    taken even to read). A complete file is only read; a missing one is one line with the fix."""
    from onelora.cache import build_once

    cache = tmp_path / "cache"
    weights = cache / "pretrained" / "w.safetensors"
    build_once(weights, lambda p: p.write_bytes(b"built by the first user"), complete=lambda p: p.is_file(),
               what="the test weights")
    make_foreign(cache)

    assert _as_second_user(weights, "second") == "built by the first user"  # read, not rebuilt
    line = _as_second_user(cache / "pretrained" / "other.safetensors", "second")
    assert line.startswith(f"CacheNotWritableError {cache / 'pretrained' / 'other.safetensors'} (the test weights) "
                           f"is not built yet, and building it needs to write in {cache / 'pretrained'}: "
                           "permission denied for user ")
    assert "chmod -R g+w" in line and "paths.cache_dir=<dir> (or ONELORA_CACHE=<dir>)" in line


def test_a_group_writable_cache_builds_past_a_teammates_lock_file(tmp_path):
    """The lock file another user created (644) cannot be opened for writing; the flock needs none."""
    from onelora.cache import build_once

    cache = tmp_path / "cache"
    build_once(cache / "a.bin", lambda p: p.write_bytes(b"a"), complete=lambda p: p.is_file(), what="a")
    (cache / "a.bin").unlink()  # to be rebuilt by the second user, past the first one's .a.bin.lock
    make_foreign(cache, writable=True)
    assert (cache / ".a.bin.lock").exists()
    assert _as_second_user(cache / "a.bin", "second") == "built by second"


def test_a_complete_cached_backbone_is_used_without_taking_the_lock(tmp_path):
    """ensure_pretrained reads a complete cached file as it is: no lock file, nothing written."""
    from safetensors.torch import save_file

    from onelora.config import plain
    from onelora.models import build_model
    from onelora.pretrain import ensure_pretrained, pretrained_path
    from onelora.settings import RunSettings

    settings = RunSettings.from_config(config(tmp_path, "+twin=digits"))
    path = pretrained_path(settings)
    path.parent.mkdir(parents=True)
    model = build_model(plain(settings.model), load_weights=False, **settings.model_args)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    before = sorted(os.listdir(path.parent)), path.stat().st_mtime_ns
    assert ensure_pretrained(settings) == path
    assert (sorted(os.listdir(path.parent)), path.stat().st_mtime_ns) == before


@pytest.mark.e2e
def test_two_users_share_a_cache_at_the_command_line(tmp_path):
    """A whole run: the first user pre-trains into the cache, the second (no write access to it)
    fine-tunes from the same file; a setting that needs a new build is one line for the second."""
    cache, args = tmp_path / "cache", ("+twin=digits", "task.pretrain.epochs=2", "task.epochs=1")
    env = {"ONELORA_CACHE": str(cache)}
    run_cli(tmp_path, *args, env=env)
    built = sorted(cache.rglob("*.safetensors"))
    make_foreign(cache)
    second = tmp_path / "second"
    second.mkdir()
    base = [*unprivileged_prefix(), sys.executable, str(ROOT / "run.py")]
    environ = {**os.environ, "ONELORA_ROOT": str(second), "PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1", **env}
    proc = subprocess.run([*base, *args], cwd=second, env=environ, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Pre-training" not in proc.stdout and sorted(cache.rglob("*.safetensors")) == built
    proc = subprocess.run([*base, *args, "task.pretrain.epochs=3", "run_tag=_longer"], cwd=second, env=environ, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-3000:]
    assert "is not built yet, and building it needs to write in" in proc.stderr and "ONELORA_CACHE=<dir>" in proc.stderr


# -- data ----------------------------------------------------------------------------------------------

def test_a_data_file_error_names_the_file_the_key_and_the_variable(tmp_path, monkeypatch):
    """How the CLI words an OSError on a dataset file under task.data.root <- paths.data_dir <- ONELORA_DATA
    (the real permission failure is the e2e test below)."""
    monkeypatch.setenv("ONELORA_DATA", str(tmp_path / "data"))
    cfg = config(tmp_path, *CIFAR_TINY)
    root = tmp_path / "data" / "twin" / "cifar10"
    batch = root / "cifar-10-batches-py" / "data_batch_3"
    line = _explain(PermissionError(errno.EACCES, "Permission denied", str(batch)), cfg)
    assert line.startswith(f"cannot use {batch} (under task.data.root={root} (set by ONELORA_DATA)): "
                           "permission denied for user ")
    assert line.endswith("point task.data.root=<dir> (or paths.data_dir=<dir>, ONELORA_DATA=<dir>) at a copy you can read")
    wrapped = RuntimeError("a library's own wrapper")
    wrapped.__cause__ = OSError(errno.EROFS, "Read-only file system", str(tmp_path / "results" / "x"))
    assert "the file system is read-only" in _explain(wrapped, cfg)
    # not a configured place, or a file the run writes itself gone missing: a bug, with its traceback
    from onelora.cli import user_message

    assert user_message(PermissionError(errno.EACCES, "Permission denied", "/etc/shadow"), cfg) is None
    assert user_message(FileNotFoundError(errno.ENOENT, "No such file", str(tmp_path / "results" / "x")), cfg) is None
    assert user_message(ValueError("a bug"), cfg) is None


@pytest.mark.e2e
def test_an_unreadable_dataset_file_is_one_line_at_the_command_line(tmp_path):
    """main: a PermissionError traceback from inside torchvision."""
    from fakes import write_cifar

    prefix = unprivileged_prefix()
    data = tmp_path / "data"
    write_cifar(data / "twin" / "cifar10")
    make_foreign(data)
    batch = data / "twin" / "cifar10" / "cifar-10-batches-py" / "data_batch_3"
    os.chmod(batch, 0o600)  # the owner's alone
    proc = subprocess.run([*prefix, sys.executable, str(ROOT / "run.py"), *CIFAR_TINY], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "ONELORA_ROOT": str(tmp_path), "ONELORA_DATA": str(data),
                               "PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().startswith(f"onelora: error: cannot use {batch} (under task.data.root=")
    assert "(set by ONELORA_DATA)): permission denied" in proc.stderr


def test_weights_a_user_may_not_read_are_not_called_damaged(tmp_path):
    """main: "cannot read the weights file ... it is damaged ... Delete it" for a teammate's private
    file (safetensors reports it as not found); now its PermissionError, which the CLI names."""
    import torch
    from safetensors.torch import save_file

    from onelora.places import explain

    weights = tmp_path / "w.safetensors"
    save_file({"w": torch.zeros(2)}, str(weights))
    make_foreign(tmp_path)
    os.chmod(weights, 0o600)
    script = (f"import sys; sys.path.insert(0, {SRC!r})\nfrom onelora.models.weights import read_state_dict\n"
              f"try:\n    read_state_dict({str(weights)!r})\nexcept Exception as err:\n"
              "    print(type(err).__name__, err.errno, err.filename)")
    proc = subprocess.run([*unprivileged_prefix(), sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.stdout.strip() == f"PermissionError {errno.EACCES} {weights}", proc.stderr[-2000:]
    line = explain(PermissionError(errno.EACCES, "Permission denied", str(weights)),
                   config(tmp_path, *CIFAR_TINY, f"model.pretrained={weights}"))
    assert line.startswith(f"cannot use model.pretrained={weights}: permission denied for user ")
    assert line.endswith("point model.pretrained=<path> at a copy you can read")


def test_count_mode_writes_in_a_folder_of_its_own_user():
    """main: mode=count wrote Hydra's run.log to one /tmp/onelora-count for every user; the second
    user on a machine failed with 'Unable to configure handler file'."""
    from omegaconf import OmegaConf

    assert OmegaConf.create({"d": "${onelora_run_dir:count,/x}"}).d.endswith(f"onelora-count-{os.getuid()}")
    assert OmegaConf.create({"d": "${onelora_run_dir:train,/x}"}).d == "/x"


def test_an_empty_path_is_refused_before_it_becomes_the_filesystem_root(tmp_path):
    """main: `paths.results_dir=` wrote the run to /cifar10/... (the empty string + "/" + run name)."""
    from onelora.places import PlaceError, check_places

    with pytest.raises(PlaceError, match=r"^paths\.results_dir is empty; set it to a folder"):
        check_places(config(tmp_path, "paths.results_dir="), None)


def test_a_tilde_from_the_environment_is_the_home_folder(tmp_path, monkeypatch):
    """main: ONELORA_RESULTS='~/runs' (no shell expands it in a job script's quotes or a .env file)
    made a folder named "~" under the working directory."""
    from omegaconf import OmegaConf

    from onelora.settings import run_dir_of

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ONELORA_RESULTS", "~/runs")
    assert OmegaConf.create({"d": "${onelora_run_dir:train,'~/runs/x'}"}).d == str(tmp_path / "home" / "runs" / "x")
    assert OmegaConf.create({"d": "${onelora_path:'~/runs'}"}).d == str(tmp_path / "home" / "runs")
    assert run_dir_of(config(tmp_path)).parts[:-4] == (tmp_path / "home" / "runs").parts


def test_cached_problem_files_and_tokenizers_are_readable_by_the_group(tmp_path):
    """main: tempfile's 0600 on the synthetic problem files and trained tokenizers, so a teammate
    sharing the cache failed with PermissionError reading them."""
    from onelora.data.synthetic.math import arithmetic_problems
    from onelora.data.tokenizers import trained_tokenizer
    from onelora.files import current_umask

    expected = 0o666 & ~current_umask()
    problems = Path(arithmetic_problems(tmp_path, ["add"], count=30, seed=0))
    trained_tokenizer(problems, tmp_path, vocab_size=300)
    written = [problems, *tmp_path.glob("tokenizers/*/tokenizer.json")]
    assert len(written) == 2 and all(path.stat().st_mode & 0o777 == expected for path in written)
