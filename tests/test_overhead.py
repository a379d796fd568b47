"""experiments.overhead: a sweep's wall time by phase, summed over runs and over the processes of a resumed run."""

import json

import pytest

from experiments import overhead


def write_timing(root, run: str, *lines: dict) -> None:
    (root / run).mkdir(parents=True)
    (root / run / "timing.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_phases_add_over_a_resumed_runs_processes_and_over_the_sweep(tmp_path):
    write_timing(tmp_path, "a", {"start_s": 5, "setup_s": 10, "steps_s": 20, "eval_s": 5, "total_s": 40},
                 {"start_s": 5, "setup_s": 10, "steps_s": 40, "eval_s": 5, "total_s": 60})  # killed once, resumed
    write_timing(tmp_path, "b", {"start_s": 5, "compile_s": 5, "steps_s": 90, "total_s": 100})
    (tmp_path / "no_timing_yet").mkdir()
    runs = overhead.sweep_seconds(str(tmp_path))
    assert sorted(runs) == ["a", "b"]
    assert runs["a"]["steps"] == 60 and runs["a"]["total"] == 100 and overhead.overhead(runs["a"]) == pytest.approx(0.4)
    last = overhead.table(runs).splitlines()[-1]
    assert last.startswith("| all 2 runs |") and last.endswith("| 200.0 | 25% |")  # 150 of 200 s were steps


def test_a_sweep_without_timings_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run with a timing.jsonl"):
        overhead.sweep_seconds(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        overhead.sweep_seconds(str(tmp_path / "missing"))
