"""Scaling-law fits: the Huber/log-sum-exp objective equals a hand computation, approach 3 recovers a known law
from noisy runs, approach 2 recovers its compute-optimal exponent, the closed form is the minimum of L on a
budget, LLaMA's argument adds up, and the command refuses bad CSVs with one line."""

import json
import math
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments import scaling

TRUE = scaling.Law(E=1.8, A=250.0, B=600.0, alpha=0.32, beta=0.30)
N = np.repeat(np.geomspace(5e4, 5e6, 5), 6)
D = np.tile(np.geomspace(5e5, 1e10, 6), 5)
GRID = {"a": np.array([0.0, 5, 10]), "b": np.array([0.0, 5, 10]), "e": np.array([-1.0, 0, 1]),
        "alpha": np.array([0.0, 0.5, 1]), "beta": np.array([0.0, 0.5, 1])}  # small: the tests' starts


@pytest.fixture(scope="module")
def noisy_fit():
    rng = np.random.default_rng(0)
    loss = TRUE.loss(N, D) * np.exp(rng.normal(0, 0.003, N.shape))  # 0.3% noise, as seeds give
    return scaling.fit(N, D, loss, bootstrap=24, grid=GRID)


def test_objective_is_the_huber_loss_of_log_sum_exp_residuals_by_hand():
    theta = (5.0, 6.0, 0.5, 0.3, 0.25)
    n, d = np.array([1e5, 1e6]), np.array([1e7, 2e8])

    def predicted_log_loss(ni, di):  # log(A / N^alpha + B / D^beta + E) with A = e^5, B = e^6, E = e^0.5
        return math.log(math.exp(5.0 - 0.3 * math.log(ni)) + math.exp(6.0 - 0.25 * math.log(di)) + math.exp(0.5))

    def huber(r, delta=1e-3):
        return 0.5 * r * r if abs(r) <= delta else delta * (abs(r) - 0.5 * delta)

    for residuals in ([0.2, -0.05], [5e-4, -3e-4]):  # beyond delta (linear branch), within it (quadratic)
        log_loss = np.array([predicted_log_loss(ni, di) - r for ni, di, r in zip(n, d, residuals, strict=True)])
        by_hand = sum(huber(r) for r in residuals)
        with jax.enable_x64(True):  # as the fit evaluates it
            got = float(scaling.objective(np.array(theta), np.log(n), np.log(d), log_loss))
            weighted = float(scaling.objective(np.array(theta), np.log(n), np.log(d), log_loss, np.array([2.0, 0.0])))
        assert got == pytest.approx(by_hand, rel=1e-9)
        assert weighted == pytest.approx(2 * huber(residuals[0]), rel=1e-9)  # bootstrap counts weight runs


def test_approach_3_recovers_a_known_law_from_noisy_runs(noisy_fit):
    law = noisy_fit.law
    # With 0.3% noise E trades off against B / D^beta (here the noisy data's own optimum is 1% off E; seeds vary
    # it by a few percent); the exponents and the compute-optimal split are pinned down tightly.
    assert law.E == pytest.approx(TRUE.E, rel=0.05)
    assert law.alpha == pytest.approx(TRUE.alpha, abs=0.02) and law.beta == pytest.approx(TRUE.beta, abs=0.02)
    assert law.a == pytest.approx(TRUE.a, abs=0.01)
    # Predictions, not only coefficients (A and alpha trade off): within the noise everywhere on the grid.
    np.testing.assert_allclose(law.loss(N, D), TRUE.loss(N, D), rtol=0.01)


def test_bootstrap_intervals_bracket_the_estimate_and_the_truth(noisy_fit):
    for name in ("E", "alpha", "beta", "a"):
        low, high = noisy_fit.intervals[name]
        width = high - low
        assert low <= getattr(noisy_fit.law, name) <= high and width > 0
        assert low - width <= getattr(TRUE, name) <= high + width
    assert noisy_fit.to_dict()["bootstrap"] == 24


def test_compute_optimal_allocation_is_the_minimum_on_the_budget():
    for c in (1e18, 1e21):
        n_opt, d_opt = TRUE.compute_optimal(c)
        assert 6 * n_opt * d_opt == pytest.approx(c)
        sizes = n_opt * np.geomspace(0.5, 2, 41)
        losses = TRUE.loss(sizes, c / (6 * sizes))
        assert np.argmin(losses) == 20  # the middle: N_opt itself
    assert TRUE.optimal_tokens(TRUE.compute_optimal(1e20)[0]) == pytest.approx(TRUE.compute_optimal(1e20)[1])
    chinchilla = scaling.CHINCHILLA
    assert chinchilla.a == pytest.approx(0.4516, abs=1e-3)  # Hoffmann et al.'s approach-3 exponent, 0.46


def test_approach_2_recovers_the_exponent_from_a_grid():
    n = np.repeat(np.geomspace(1e5, 1e8, 10), 12)
    d = np.tile(np.geomspace(1e6, 1e11, 12), 10)
    result = scaling.isoflop(n, d, TRUE.loss(n, d), budgets=np.geomspace(1e15, 1e18, 5))
    assert result["a"] == pytest.approx(TRUE.a, abs=0.03) and result["b"] == pytest.approx(TRUE.b, abs=0.03)
    for profile in result["profiles"]:
        assert profile["N_opt"] == pytest.approx(TRUE.compute_optimal(profile["C"])[0], rel=0.25)


def test_llama_argument_adds_up():
    rows = scaling.llama_argument(scaling.CHINCHILLA, [6.7e9, 13e9])
    (row,) = rows
    assert TRUE.tokens_to_reach(1e5, TRUE.E) == np.inf  # a loss at or below E + A / N^alpha is out of reach
    assert scaling.CHINCHILLA.loss(6.7e9, row["D_needed"]) == pytest.approx(row["loss_target"])
    assert row["D_needed"] > row["D_next_opt"]  # the smaller model needs more tokens than the larger one's optimum
    assert row["inference_flops_saved_per_token"] == pytest.approx(2 * (13e9 - 6.7e9))
    assert row["breakeven_inference_tokens"] == pytest.approx(
        (row["train_flops"] - row["train_flops_next"]) / row["inference_flops_saved_per_token"])


def test_final_points_take_each_finished_annealed_runs_last_row():
    rows = [
        {"run": "a", "params": "10", "tokens": "5", "loss": "3.0", "finished": "True", "annealed": "True"},
        {"run": "a", "params": "10", "tokens": "9", "loss": "2.5", "finished": "True", "annealed": "True"},
        {"run": "b", "params": "20", "tokens": "9", "loss": "2.0", "finished": "False", "annealed": "True"},
        {"run": "c", "params": "20", "tokens": "9", "loss": "2.2", "finished": "True", "annealed": "False"},
    ]
    n, d, loss, notes = scaling.final_points(rows)
    assert n.tolist() == [10] and d.tolist() == [9] and loss.tolist() == [2.5]
    assert notes == ["dropped 1 run(s) not finished: b", "dropped 1 run(s) not annealed: c"]


@pytest.mark.parametrize("content,message", [
    ("params,tokens\n1,2\n", "lacks the column(s) ['loss']"),
    ("params,tokens,loss\n" + "".join(f"{10 ** i},{10 ** (i + 1)},{3 - i / 10}\n" for i in range(1, 6))
     + "-5,100,2\n", "params must be positive and finite; run 5 has params=-5.0"),
    ("params,tokens,loss\n1e5,1e6,3\n1e6,1e7,2.5\n1e7,1e8,2\n", "3 runs cannot determine the 5 parameters"),
    ("params,tokens,loss\n1e5,x,3\n", "row 1: tokens='x' is not a number"),
])
def test_fit_command_refuses_bad_csvs_with_one_line(tmp_path, monkeypatch, capsys, content, message):
    from llama_jax import cli

    path = tmp_path / "runs.csv"
    path.write_text(content)
    monkeypatch.setattr(sys, "argv", ["scaling", "fit", f"--csv={path}", "--bootstrap=0"])
    with pytest.raises(SystemExit) as exit_:
        cli.run(scaling.main)
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 1 and err.startswith("error: ") and message in err and len(err.splitlines()) == 1


@pytest.mark.slow  # the full grid of 4500 starts, compiled in a fresh process
def test_fit_command_prints_json_with_the_coefficients(tmp_path):
    path = tmp_path / "runs.csv"
    loss = TRUE.loss(N, D)
    path.write_text("params,tokens,loss\n" + "".join(f"{n},{d},{y}\n" for n, d, y in zip(N, D, loss, strict=True)))
    result = subprocess.run([sys.executable, "-m", "experiments.scaling", "fit", f"--csv={path}", "--json",
                             "--bootstrap=0"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    fitted = json.loads(result.stdout)
    assert {"E", "A", "B", "alpha", "beta", "a", "b"} <= set(fitted)
    assert fitted["alpha"] == pytest.approx(TRUE.alpha, abs=0.01) and fitted["E"] == pytest.approx(TRUE.E, rel=0.01)


def test_a_loss_that_steps_in_n_is_named_a_degenerate_fit_not_an_overflow():
    # The smallest size 0.5 nats worse, the others equal: no power law in N fits, and the best optimum sends
    # alpha and log A off to infinity (the CPU study's first three sizes did this); the D term is still found.
    n, d = np.repeat([1e5, 3e5, 1e6], 4), np.tile([1e6, 3e6, 1e7, 3e7], 3)
    loss = 2 + 400 / d ** 0.3 + np.where(n == 1e5, 0.5, 0.0)
    with pytest.raises(scaling.DegenerateFit, match=r"log B = 5.99\d* with beta = 0.3"):
        scaling.fit(n, d, loss, grid=scaling.COARSE_GRID)
