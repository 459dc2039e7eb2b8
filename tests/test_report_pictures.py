"""The report's pictures of what the runs produced (depth maps, sample grids, answers, loss curves)
and the report folder's README, from synthetic run folders: which runs are shown, in which panels,
with which titles (the figures' axes, not their pixels)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from onelora.reporting import runs_from_records
from onelora.figures.depth_maps import EXAMPLES_FILE, save_examples
from onelora.reporting.gallery import depth_comparisons, language_pictures, sample_comparisons, write_gallery
from onelora.reporting.index import index_markdown, write_index
from onelora.figures.samples import SAMPLES_FILE, save_samples
from onelora.results import write_json_atomic

DEPTH = {"task": "depth", "source": "synthetic-indoor", "target": "synthetic-outdoor"}
GEN = {"task": "generation", "source": "digits0-4", "target": "digits5-9"}
MATH = {"task": "math", "source": "synthetic-add-sub", "target": "synthetic-mul-two_step"}


def record(run_dir: Path, task: str, paper: dict, model: str, method: str, seed: int, family: str,
           metric: dict, extra: dict | None = None) -> dict:
    rec = {"schema": 1, "status": "completed", "task": task, "family": family, "paper": paper, "model": model,
           "method": method, "seed": seed, "metric": {**metric, "extra": extra or {}}, "time": {"fit_s": 1.0},
           "config": {"seed": seed}}
    write_json_atomic(run_dir / "results.json", rec)
    return {**rec, "_path": str(run_dir / "results.json")}


def depth_examples(run_dir: Path, offset: float, indices=(0, 5, 9)) -> None:
    """Three 6 x 8 test images: the ground truth 2..9 m with the top row invalid (sky), the
    prediction off by ``offset`` m, the border outside the evaluation crop."""
    k = len(indices)
    depth = np.tile(np.linspace(2, 9, 8, dtype=np.float32), (k, 6, 1))
    valid = np.ones_like(depth, dtype=bool)
    valid[:, 0] = False
    depth[~valid] = 0.0
    evaluated = valid.copy()
    evaluated[:, :, 0] = False
    rgb = np.random.default_rng(0).random((k, 6, 8, 3))
    save_examples(run_dir / EXAMPLES_FILE, indices=list(indices), rgb=rgb, depth=depth, valid=valid,
                  evaluated=evaluated, pred=depth + offset, min_depth=1e-3, max_depth=80.0)


@pytest.fixture()
def depth_runs(tmp_path) -> list:
    recs = []
    for method, seed, offset, rmse in (("unadapted", 0, 3.0, 11.9), ("head", 0, 2.0, 10.6), ("onelora", 1, 0.6, 6.99),
                                       ("onelora", 0, 0.5, 6.94), ("full", 0, 0.25, 4.36)):
        run_dir = tmp_path / "results" / method / f"seed{seed}"
        depth_examples(run_dir, offset)
        recs.append(record(run_dir, "depth_mini", DEPTH, "depth_mini", method, seed, "depth",
                           {"name": "rmse", "direction": "min", "test": rmse}, {"abs_rel": {"test": rmse / 20}}))
    other = tmp_path / "results" / "lora" / "seed0"  # other test images: cannot stand beside the rest
    depth_examples(other, 0.3, indices=(1, 2, 3))
    recs.append(record(other, "depth_mini", DEPTH, "depth_mini", "lora", 0, "depth",
                       {"name": "rmse", "direction": "min", "test": 6.3}))
    failed = record(tmp_path / "results" / "bitfit" / "seed0", "depth_mini", DEPTH, "depth_mini", "bitfit", 0, "depth",
                    {"name": "rmse", "direction": "min", "test": None})
    depth_examples(tmp_path / "results" / "bitfit" / "seed0", 1.0)
    recs.append({**failed, "status": "failed"})
    return runs_from_records(recs)


def test_depth_methods_side_by_side_on_the_same_images(depth_runs):
    ((name, fig),) = list(depth_comparisons(depth_runs))
    try:
        assert name == "depth_examples_depth_mini_depth_mini.png"
        images = [ax for ax in fig.axes if ax.images]
        titles = [ax.get_title() for ax in images if ax.get_title()]
        # the tables' method order, seed 0 of each, its test RMSE / AbsRel; not the failed run, nor the
        # run on other test images
        assert titles == ["RGB", "ground truth", "Un-adapted\nRMSE 11.900 · AbsRel 0.5950",
                          "Head\nRMSE 10.600 · AbsRel 0.5300", "1LoRA\nRMSE 6.940 · AbsRel 0.3470",
                          "All\nRMSE 4.360 · AbsRel 0.2180"]
        assert len(images) == 3 * (2 + 2 * 4)  # per image: RGB, ground truth, and each method's prediction and error
        assert "seed 0 of each method" in fig._suptitle.get_text()
        cells = {(ax.get_subplotspec().rowspan.start, ax.get_subplotspec().colspan.start): ax for ax in images}
        first_row = [cells[0, c] for c in range(6)]  # RGB, ground truth, the 4 predictions of test image 0
        gt = first_row[1].images[0]
        assert np.ma.getmaskarray(gt.get_array())[0].all() and not np.ma.getmaskarray(gt.get_array())[1:].any()
        assert {ax.images[0].get_clim() for ax in first_row[1:]} == {gt.get_clim()}  # one depth scale per image
        errors = [cells[1, c] for c in range(2, 6)]  # below them: their absolute errors
        assert all(np.ma.getmaskarray(ax.images[0].get_array())[:, 0].all() for ax in errors)  # outside the crop
        assert len({ax.images[0].get_clim() for ax in errors}) == 1  # one error scale per image
        # the per-image RMSE under each error panel: the prediction is off by a constant
        assert [ax.get_xlabel() for ax in errors] == ["RMSE 3 m", "RMSE 2 m", "RMSE 0.5 m", "RMSE 0.25 m"]
        bars = [ax.get_ylabel() for ax in fig.axes if not ax.images and ax.get_ylabel()]
        assert bars == ["depth (m)", "|error| (m)"] * 3
    finally:
        plt.close(fig)


def test_generation_grids_side_by_side_with_the_same_noise(tmp_path):
    recs = []
    for method, fid, seed in (("full", 6.9, 0), ("onelora", 42.0, 0), ("unadapted", 243.5, 0)):
        run_dir = tmp_path / method
        labels = [k for k in range(5) for _ in range(4)]
        images = np.random.default_rng(len(method)).uniform(-1, 1, (20, 1, 8, 8))
        save_samples(run_dir / SAMPLES_FILE, images, labels, columns=4, seed=seed)
        recs.append(record(run_dir, "digits_generation", GEN, "dit_digits", method, 0, "generation",
                           {"name": "fid", "direction": "min", "test": fid}))
    ((name, fig),) = list(sample_comparisons(runs_from_records(recs)))
    try:
        assert name == "samples_digits_generation_dit_digits.png"
        assert [ax.get_title() for ax in fig.axes] == ["Un-adapted", "1LoRA", "All"]
        assert [ax.get_xlabel() for ax in fig.axes] == ["test FID 243.50 (seed 0)", "test FID 42.00 (seed 0)",
                                                        "test FID 6.90 (seed 0)"]
        assert "the same class labels and noise (sample seed 0)" in fig._suptitle.get_text()
        assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [f"label {k}" for k in range(5)]
        assert fig.axes[0].images[0].get_array().shape == (5 * 9 + 1, 4 * 9 + 1)
    finally:
        plt.close(fig)
    # another sampling seed: the figure says the grids are not comparable image by image
    save_samples(tmp_path / "full" / SAMPLES_FILE, np.zeros((20, 1, 8, 8)), labels, columns=4, seed=3)
    ((_, fig),) = list(sample_comparisons(runs_from_records(recs)))
    try:
        assert "NOT the same labels or noise (sample seeds [0, 3])" in fig._suptitle.get_text()
    finally:
        plt.close(fig)


def write_log(run_dir: Path, rows: list[dict]) -> None:
    path = run_dir / "logs" / "version_0" / "metrics.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = ["epoch", "step", "train/loss", "val/loss"]
    path.write_text(",".join(keys) + "\n" + "".join(",".join(str(r.get(k, "")) for k in keys) + "\n" for r in rows))


def side_by_side(run_dir: Path, answers: list[str]) -> None:
    rows = [{"query": f"What is {i} times 7?", "prompt": "", "reference": f"{i} * 7 = {7 * i}. The answer is: {7 * i}",
             "generated": f"The answer is: {a}", "reference_answer": str(7 * i), "generated_answer": a,
             "correct": a == str(7 * i)} for i, a in enumerate(answers, 2)]
    (run_dir / "side_by_side.json").write_text(json.dumps(rows))


def test_language_answers_table_and_loss_curves(tmp_path):
    recs = []
    metric = {"name": "loss", "direction": "min", "val_key": "val/loss", "test": 0.5}
    for method, seed, answers, scale in (("unadapted", 0, ["3", "", "1"], None), ("head", 0, ["14", "20", "1"], 2.0),
                                         ("onelora", 0, ["14", "21", "28"], 1.0), ("onelora", 1, ["14", "21", "2"], 1.1),
                                         ("full", 0, ["14", "21", "28"], 0.5)):
        run_dir = tmp_path / method / f"seed{seed}"
        run_dir.mkdir(parents=True)
        side_by_side(run_dir, answers)
        if scale is None:  # evaluated as loaded: one validation value at step 0
            write_log(run_dir, [{"epoch": 0, "step": 0, "val/loss": 5.5}])
        else:
            write_log(run_dir, [{"epoch": 0, "step": s, "train/loss": scale * 3 / s} for s in range(1, 100)]
                      + [{"epoch": e, "step": 50 * e, "val/loss": scale / e} for e in (1, 2)])
        recs.append(record(run_dir, "math_mini", MATH, "llama_mini", method, seed, "language", metric))
    recs.append(record(tmp_path / "digits", "digits", MATH, "llama_mini", "lora", 0, "classification", metric))
    out = dict(language_pictures(runs_from_records(recs)))
    assert set(out) == {"answers_math_mini_llama_mini.md", "loss_curves_math_mini_llama_mini.png"}
    md = out["answers_math_mini_llama_mini.md"]
    assert "| # | problem | reference | Un-adapted | Head | 1LoRA | All |" in md
    assert "| 1 | What is 2 times 7? | **14** | 3 ✗ | 14 ✓ | 14 ✓ | 14 ✓ |" in md  # 1LoRA: seed 0's answers
    assert "| 2 | What is 3 times 7? | **21** | (none) ✗ | 20 ✗ | 21 ✓ | 21 ✓ |" in md
    assert "| | correct | | 0 of 3 | 1 of 3 | 3 of 3 | 3 of 3 |" in md
    assert "| reference | 4 * 7 = 28. The answer is: 28 |" in md and "| Head | The answer is: 1 |" in md
    fig = out["loss_curves_math_mini_llama_mini.png"]
    try:
        train_ax, val_ax = fig.axes
        assert [line.get_label() for line in train_ax.lines] == ["Head", "1LoRA (n=2)", "All"]
        assert [line.get_label() for line in val_ax.lines] == ["Un-adapted (no training: 5.5)", "Head", "1LoRA (n=2)", "All"]
        unadapted = val_ax.lines[0]
        assert unadapted.get_linestyle() == "--" and list(unadapted.get_ydata()) == [5.5, 5.5]
        one = val_ax.lines[2]
        assert list(one.get_xdata()) == [50, 100] and one.get_ydata() == pytest.approx([1.05, 0.525])  # mean of seeds
        assert len(val_ax.collections) == 1 and len(train_ax.collections) == 1  # the seeds' range, for 1LoRA only
        assert val_ax.get_yscale() == "log" and train_ax.get_xlabel() == "optimizer step"
        assert [t.get_text() for t in fig.legends[0].get_texts()] == ["Un-adapted (no training: 5.5)", "Head",
                                                                      "1LoRA (n=2)", "All"]
    finally:
        plt.close(fig)


def test_gallery_files_and_the_index(depth_runs, tmp_path):
    out = tmp_path / "reports"
    written = write_gallery(depth_runs, out)
    assert [p.name for p in written] == ["depth_examples_depth_mini_depth_mini.png"]
    for name, text in (("ours_x.md", "# Ours only: task depth_mini · model m\n"), ("ours_x.csv", ""), ("ours_x.png", ""),
                       ("table_S2.md", "# Table S2: KITTI → NYU\n"), ("table_S2.png", ""),
                       ("table_S2.csv", "status\nmissing\n"), ("table_S3.md", "# Table S3: NYU → KITTI\n"),
                       ("table_S3.png", ""), ("table_S3.csv", "status\nok\n"), ("summary.md", "# s\n"),
                       ("calibration_digits.png", ""), ("calibration_digits.md", "# Calibration (Fig. 11)\n"),
                       ("answers_math_mini_llama_mini.md", "# Answers\n"), ("notes.txt", "")):
        (out / name).write_text(text)
    md = index_markdown(out)
    for path in out.iterdir():  # every file is listed
        assert f"]({path.name})" in md, path.name
    pictures = md.split("## Every table and figure")[0]
    embedded = [line for line in pictures.splitlines() if line.startswith("![")]
    # the key pictures: ours, the methods' depth maps, a paper table only once it has our runs, the analyses
    assert [line.rsplit("(", 1)[1] for line in embedded] == [
        "ours_x.png)", "depth_examples_depth_mini_depth_mini.png)", "table_S3.png)", "calibration_digits.png)"]
    assert "#### task depth_mini · model m" in pictures
    assert "- [table_S3.md](table_S3.md) · [table_S3.csv](table_S3.csv) · [table_S3.png](table_S3.png): Table S3: NYU → " \
           "KITTI: ours beside the paper's rows" in md
    assert "### Other files\n\n- [notes.txt](notes.txt): notes" in md
    assert write_index(out).read_text() == md


def test_analysis_command_refreshes_the_index(tmp_path, monkeypatch):
    from onelora.analysis import __main__ as analysis

    class Fake:
        """an analysis that writes one figure"""

        @staticmethod
        def add_arguments(parser):
            parser.add_argument("--out")

        @staticmethod
        def run(args):
            Path(args.out, "pca_alignment_x.png").write_bytes(b"")
            return 0

    monkeypatch.setitem(analysis.ANALYSES, "pca_alignment", Fake)
    assert analysis.main(["pca_alignment", "--out", str(tmp_path)]) == 0
    assert "![PCA alignment" not in (tmp_path / "README.md").read_text()  # no .md title: the stem
    assert "(pca_alignment_x.png)" in (tmp_path / "README.md").read_text()
