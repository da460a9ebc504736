"""bench/learning.py without training: the commands it would run, and --report-only on hand-made eval.csv files."""

import csv
import importlib.util
from pathlib import Path

import pytest

from hsd3_learn.training import EVAL_COLUMNS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def learning():
    spec = importlib.util.spec_from_file_location("bench_learning", ROOT / "bench" / "learning.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_eval(run_dir: Path, scores: list[float], lengths: list[float]) -> None:
    run_dir.mkdir(parents=True)
    with (run_dir / "eval.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=EVAL_COLUMNS)
        writer.writeheader()
        for i, (score, length) in enumerate(zip(scores, lengths)):
            writer.writerow({"samples": i * 10, "score_mean": score, "score_min": score, "score_max": score,
                             "return_mean": score - 1, "return_min": 0, "return_max": 0, "length_mean": length,
                             "length_min": length, "length_max": length})


def test_commands_cap_both_methods_at_the_same_samples_and_give_hsd3_the_skills(learning, tmp_path):
    args = learning.parse_args(["--workdir", str(tmp_path), "--samples", "500", "--seeds", "0,3"])
    runs = learning.run_commands(args, tmp_path / "checkpoint-lo.pt")
    assert sorted(runs) == [("hsd3", 0), ("hsd3", 3), ("sac", 0), ("sac", 3)]
    for (method, seed), (command, run_dir) in runs.items():
        assert "max_samples=500" in command and f"seed={seed}" in command and "profile=laptop" in command
        assert ("lo.init_from=" in " ".join(command)) == (method == "hsd3")
        assert run_dir == tmp_path / f"{method}_seed{seed}"
    with pytest.raises(SystemExit):
        learning.parse_args(["--methods", "hiro"])


def test_report_only_writes_the_csv_table_and_plot_with_ratios(learning, tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    write_eval(work / "hsd3_seed0", [0.0, 1.0, 2.0], [1000, 1000, 900])
    write_eval(work / "hsd3_seed1", [0.0, 3.0, 4.0], [1000, 800, 700])
    write_eval(work / "sac_seed0", [0.0, 1.0, 1.0], [100, 200, 300])
    write_eval(work / "sac_seed1", [0.0, 1.0, 2.0], [100, 200, 300])
    (work / "sac_seed0" / "wall_seconds.txt").write_text("60\n60\n")
    learning.main(["--workdir", str(work), "--out", str(out), "--report-only"])
    rows = list(csv.DictReader((out / "learning-hurdles.csv").open()))
    assert len(rows) == 12 and {r["method"] for r in rows} == {"hsd3", "sac"}
    text = (out / "learning-hurdles.txt").read_text()
    score_table = text.split("episode length")[0]
    lines = {line.split()[0]: line.split() for line in score_table.splitlines() if line.strip()[:1].isdigit()}
    assert lines["20"][1] == "3.000" and lines["20"][-1] == "2.00"  # hsd3 mean 3, sac mean 1.5: ratio 2
    assert lines["0"][-1] == "n/a"  # no ratio against a zero SAC score
    assert "sac seed 0: 2.0 min wall clock" in text and "hsd3 seed 0:" not in text  # only recorded walls
    assert "episode length" in text and (out / "learning-hurdles.png").stat().st_size > 1000
