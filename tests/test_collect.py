"""experiments.collect's `eval/mixture/loss`, the quantity the scaling fits use, on runs whose held-out losses are
known: the mean of the sources' losses under the run's own mixture weights, with the standard error of that mean."""

import json

import pytest

from experiments import collect
from experiments.configs.common import base_config

LOSSES = {"commoncrawl": 2.0, "c4": 3.0, "github": 1.0, "wikipedia": 4.0, "books": 5.0, "arxiv": 6.0,
          "stackexchange": 7.0}


def write_run(root, name: str, losses: dict[str, float], weights: dict[str, float] | None = None,
              source: str = "mixture", se: float | None = None) -> None:
    """A finished run of the tiny preset under root/name: run.json as experiments.launch writes it, and a
    metrics.jsonl with a training record and the held-out losses (and standard errors) of its final step."""
    config = base_config("tiny")
    config.data.source = source
    config.train.steps = 10
    if weights is not None:
        config.data.weights = weights
    workdir = root / name
    workdir.mkdir(parents=True)
    record = {"sweep": root.name, "run": name, "branch": None, "config": json.loads(config.to_json())}
    (workdir / "run.json").write_text(json.dumps(record))
    evaluation = {f"eval/{k}/loss": v for k, v in losses.items()}
    if se is not None:
        evaluation.update({f"eval/{k}/loss_se": se for k in losses})
    lines = [{"step": 10, "loss": 2.5, "lr": 1e-4}, {"step": 10, **evaluation}]
    (workdir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def final_row(root, name: str) -> dict:
    (row,) = [r for r in collect.collect(str(root)) if r["run"] == name]
    return row


def test_the_mixture_loss_weights_each_source_by_table_1(tmp_path):
    root = tmp_path / "sweep"
    write_run(root, "table1", LOSSES, se=0.01)
    row = final_row(root, "table1")
    # By hand: .67 * 2 + .15 * 3 + .045 * (1 + 4 + 5) + .025 * 6 + .02 * 7 = 1.34 + .45 + .45 + .15 + .14
    assert row["eval/mixture/loss"] == pytest.approx(2.53, abs=1e-12)
    # sqrt(.67^2 + .15^2 + 3 * .045^2 + .025^2 + .02^2) = sqrt(.4785) times the sources' 0.01
    assert row["eval/mixture/loss_se"] == pytest.approx(0.01 * 0.4785 ** 0.5, abs=1e-12)
    assert row["eval/books/loss"] == 5.0 and row["finished"]


def test_the_mixture_loss_follows_the_runs_own_weights(tmp_path):
    root = tmp_path / "sweep"
    # Only C4 and Books trained on: the other sources' held-out losses are logged but do not count.
    write_run(root, "halves", LOSSES, weights={**dict.fromkeys(LOSSES, 0.0), "c4": 0.5, "books": 0.5})
    # Weights that are not normalized (data.normalize_weights): the mean divides by their sum, (1 * 3 + 3 * 5) / 4.
    write_run(root, "unnormalized", LOSSES, weights={**dict.fromkeys(LOSSES, 0.0), "c4": 1.0, "books": 3.0})
    assert final_row(root, "halves")["eval/mixture/loss"] == pytest.approx(4.0, abs=1e-12)
    assert final_row(root, "unnormalized")["eval/mixture/loss"] == pytest.approx(4.5, abs=1e-12)
    assert "eval/mixture/loss_se" not in final_row(root, "halves")  # no source logged a standard error


def test_no_mixture_loss_without_every_weighted_source_or_for_synthetic_data(tmp_path):
    root = tmp_path / "sweep"
    write_run(root, "missing", {k: v for k, v in LOSSES.items() if k != "arxiv"})
    write_run(root, "synthetic", LOSSES, source="synthetic")
    assert final_row(root, "missing")["eval/mixture/loss"] is None
    assert final_row(root, "synthetic")["eval/mixture/loss"] is None


def test_merge_keeps_the_committed_runs_whose_workdirs_are_gone_and_replaces_the_collected_ones(tmp_path):
    """`collect --merge`: a study's table on a fresh clone (its earlier runs' workdirs gone) gains the new runs,
    each run collected again replaces its old rows, and no other run's row is lost or changed."""
    import csv
    import io
    import subprocess
    import sys

    old, new = tmp_path / "old" / "study", tmp_path / "new" / "study"
    write_run(old, "gone", LOSSES)
    write_run(old, "again", LOSSES)
    out = tmp_path / "study.csv"
    out.write_text(collect.to_csv(collect.collect(str(old))))
    before = {row["run"]: row for row in csv.DictReader(io.StringIO(out.read_text()))}
    write_run(new, "again", {k: v + 1 for k, v in LOSSES.items()})
    write_run(new, "fresh", LOSSES)
    command = [sys.executable, "-m", "experiments.collect", f"--sweep={new}", f"--out={out}"]
    refused = subprocess.run(command, capture_output=True, text=True)
    assert refused.returncode != 0 and "--merge" in refused.stderr and out.read_text() == collect.to_csv(
        collect.collect(str(old)))
    subprocess.run([*command, "--merge"], check=True, capture_output=True)
    after = {row["run"]: row for row in csv.DictReader(io.StringIO(out.read_text()))}
    assert sorted(after) == ["again", "fresh", "gone"]
    assert after["gone"] == before["gone"]
    assert float(after["again"]["eval/mixture/loss"]) == pytest.approx(float(before["again"]["eval/mixture/loss"]) + 1)


def test_merging_a_sweep_that_trained_nothing_leaves_the_table_as_it_was(tmp_path):
    """A study continued with every run already collected (`make scaling CONTINUE=1`) merges nothing and loses
    nothing; without --merge an empty sweep is still an error."""
    import subprocess
    import sys

    write_run(tmp_path / "old" / "study", "kept", LOSSES)
    out = tmp_path / "study.csv"
    out.write_text(collect.to_csv(collect.collect(str(tmp_path / "old" / "study"))))
    before = out.read_text()
    for empty in (tmp_path / "missing" / "study", tmp_path / "empty"):
        (tmp_path / "empty").mkdir(exist_ok=True)
        merged = subprocess.run([sys.executable, "-m", "experiments.collect", f"--sweep={empty}", f"--out={out}",
                                 "--merge"], capture_output=True, text=True)
        assert merged.returncode == 0 and "unchanged" in merged.stdout and out.read_text() == before
    refused = subprocess.run([sys.executable, "-m", "experiments.collect", f"--sweep={tmp_path / 'empty'}"],
                             capture_output=True, text=True)
    assert refused.returncode != 0 and "holds no run" in refused.stderr
