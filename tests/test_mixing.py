"""Mixture laws (experiments.mixing): the swarm is seeded, centred on Table 1 and within the repetition caps; a
known Data Mixing Law and a known log-linear law are recovered from synthetic runs with realistic noise, and so
is the law's optimum; the search never breaks the constraint; every bad input is a one-line error; the collected
table carries each run's weights; the swarm's sweep file is the study the README describes."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from experiments import collect, mixing, scaling, sweep
from experiments.configs import mixture_swarm
from llama_jax import corpus_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWARM_FILE = os.path.join(ROOT, "experiments", "configs", "mixture_swarm.py")
CENTER = mixture_swarm.table1()
CAP = mixture_swarm.caps()
FLOOR = mixture_swarm.FLOOR
NOISE = 0.01  # nats: the held-out loss's standard error on 16 batches at these sizes is 0.005-0.02


def known_law(seed: int = 1) -> mixing.Law:
    """A law shaped like the proxies' (losses 2-4 nats; a source's own weight lowers its loss most, the others'
    a little)."""
    rng = np.random.default_rng(seed)
    n = len(CENTER)
    t = -rng.uniform(0.3, 1.0, (n, n))
    t[np.arange(n), np.arange(n)] = -rng.uniform(3, 8, n)
    return mixing.Law(rng.uniform(1.5, 2.5, n), rng.uniform(1, 2, n), t - t.mean(1, keepdims=True))


def design(k: int = 46) -> np.ndarray:
    """The swarm's own design: Table 1, uniform-by-tokens, the corners and `k` Dirichlet draws."""
    unique = mixture_swarm.unique_tokens()
    return np.vstack([CENTER, mixing.by_tokens(unique), mixing.corners(CENTER, CAP, FLOOR),
                      mixing.swarm(k, 0, CENTER, FLOOR, CAP)])


def runs_of(law, weights, noise=NOISE, seed=2, objective="mean") -> mixing.Runs:
    values = law.predict(weights) + np.random.default_rng(seed).normal(0, noise, (len(weights), len(CENTER)))
    return mixing.Runs([f"r{i}" for i in range(len(weights))], mixing.SOURCES, weights, values,
                       mixing.objective(objective))


@pytest.fixture(scope="module")
def noisy():
    """The known law, its synthetic swarm with NOISE, and the law fitted on it."""
    law = known_law()
    runs = runs_of(law, design())
    return law, runs, mixing.fit(runs, "law")


# ---------------------------------------------------------------------------------------------- the swarm
def test_the_swarm_is_seeded_on_the_simplex_within_floor_and_caps_and_centred_on_table1():
    a = mixing.swarm(3000, 0, CENTER, FLOOR, CAP)
    np.testing.assert_array_equal(a[:46], mixing.swarm(46, 0, CENTER, FLOOR, CAP))
    assert not np.array_equal(a[:46], mixing.swarm(46, 1, CENTER, FLOOR, CAP))
    np.testing.assert_allclose(a.sum(1), 1)
    assert mixing.feasible(a, CAP, FLOOR).all() and a.min() >= FLOOR
    # the mean of a Dirichlet is its centre; shrinking to the floor moves it to floor + (1 - 7 floor) x centre
    # (the stackexchange cap at 36% cuts off few draws)
    np.testing.assert_allclose(a.mean(0), FLOOR + (1 - 7 * FLOOR) * CENTER, atol=0.01)


def test_the_concentration_puts_the_largest_sources_5th_percentile_at_half_its_weight():
    alpha = mixing.concentration(CENTER)
    assert stats.beta.ppf(0.05, alpha * 0.67, alpha * 0.33) == pytest.approx(0.335, rel=1e-6)
    draws = mixing.swarm(4000, 3, CENTER, 0.0, np.ones(7), alpha)
    assert np.quantile(draws[:, 0], 0.05) == pytest.approx(0.335, abs=0.02)
    q95 = np.quantile(draws[:, 1:], 0.95, axis=0)
    assert (q95 > 2.5 * CENTER[1:]).all() and (q95[1:] > 4.5 * CENTER[2:]).all()  # the small sources reach well above


def test_corners_move_half_the_mass_to_one_source_and_stackexchange_only_to_its_cap():
    corners = mixing.corners(CENTER, CAP, FLOOR)
    assert mixing.feasible(corners, CAP, FLOOR).all()
    np.testing.assert_allclose(corners.sum(1), 1)
    for i, corner in enumerate(corners[:-1]):
        assert corner[i] == pytest.approx(0.5 + 0.5 * CENTER[i])
    assert CAP[-1] == pytest.approx(4 * 3.55e5 / 4e6) and CAP[:-1].min() == 1
    assert CAP[-1] - 0.01 < corners[-1, -1] <= CAP[-1]


def test_epochs_and_caps_are_tokens_over_unique_tokens():
    unique = mixture_swarm.unique_tokens()
    e = mixing.epochs(CENTER, 1.4e12, unique)
    assert e[-1] == pytest.approx(0.02 * 1.4e12 / 3.55e5)
    np.testing.assert_allclose(mixing.epochs(mixing.caps(1e7, unique, 4.0), 1e7, unique)[-1], 4.0)
    np.testing.assert_allclose(mixing.by_tokens(unique) * 1e6 / unique, 1e6 / unique.sum())  # same epochs for all


# ---------------------------------------------------------------------------------------------- the laws
def test_a_noise_free_law_is_recovered_exactly():
    law = known_law()
    fitted = mixing.fit(runs_of(law, design(), noise=0.0), "law")
    np.testing.assert_allclose(fitted.c, law.c, atol=2e-3)
    np.testing.assert_allclose(fitted.k, law.k, rtol=1e-2)
    np.testing.assert_allclose(fitted.t, law.t, atol=2e-2)


def test_a_known_law_is_recovered_from_noisy_runs(noisy):
    law, runs, fitted = noisy
    np.testing.assert_allclose(fitted.c, law.c, atol=0.1)
    np.testing.assert_allclose(fitted.k, law.k, rtol=0.3)
    own = np.diag(fitted.t) / np.diag(law.t)  # each source's effect on its own loss, the law's main term
    assert (np.abs(own - 1) < 0.35).all(), own
    fresh = mixing.swarm(200, 9, CENTER, FLOOR, CAP)
    error = fitted.predict(fresh) - law.predict(fresh)
    assert np.sqrt(np.mean(error**2)) < NOISE  # predicts new mixtures better than one run measures them
    np.testing.assert_allclose(fitted.t.sum(1), 0, atol=1e-9)  # reported in the centred gauge


def test_the_optimum_of_the_fitted_law_is_nearly_the_known_laws(noisy):
    law, runs, _ = noisy
    goal = runs.objective
    result = mixing.optimize_mixture(runs, CAP, FLOOR, "law", bootstrap=20)
    found = np.array(list(result["weights"].values()))
    true_best = mixing.best_mixture(law, goal, CAP, FLOOR, CENTER)
    true_value = lambda w: float(goal.combine(law.predict(w[None]))[0])  # noqa: E731
    assert true_value(found) - true_value(true_best) < 0.01  # within the noise of one run
    assert true_value(found) < true_value(CENTER) - 0.05  # and far better than Table 1 under this law
    low, high = result["predicted_interval"]
    assert low <= true_value(found) <= high + NOISE
    assert mixing.feasible(found, CAP, FLOOR) and found.sum() == pytest.approx(1)


def test_a_known_log_linear_law_is_recovered_and_cross_validation_ranks_mixtures():
    rng = np.random.default_rng(4)
    weights = design()
    b, beta = rng.uniform(2, 3, 7), -rng.uniform(0, 0.1, (7, 7))
    values = b + np.log(weights) @ beta.T
    runs = mixing.Runs([f"r{i}" for i in range(len(weights))], mixing.SOURCES, weights,
                       values + rng.normal(0, NOISE, values.shape), mixing.objective("mean"))
    fitted = mixing.fit(runs, "loglinear")
    np.testing.assert_allclose(fitted.b, b, atol=0.05)
    np.testing.assert_allclose(fitted.beta, beta, atol=0.01)
    cv = mixing.cross_validate(runs, "loglinear", folds=5)
    assert cv["objective"]["mae"] < 2 * NOISE and cv["objective"]["spearman"] > 0.5


def test_cross_validation_of_the_law_ranks_held_out_mixtures(noisy):
    _, runs, _ = noisy
    cv = mixing.cross_validate(runs, "law", folds=5, starts=8)
    for target, agreement in cv["targets"].items():
        assert agreement["mae"] < 2 * NOISE, target
        assert agreement["spearman"] > 0.7, target
    assert cv["objective"]["spearman"] > 0.9


@pytest.mark.parametrize("seed", range(6))
def test_the_search_never_breaks_the_constraint(seed):
    """Random laws (some pulling hard towards stackexchange, the capped source) and random caps: the optimum is
    on the simplex, within the floor and every cap; where the law rewards the capped source, it sits on the cap."""
    rng = np.random.default_rng(seed)
    law = known_law(seed)
    law.t[-1, -1] -= 30  # stackexchange's loss falls steeply with its weight
    cap = CAP.copy() if seed % 2 else np.minimum(1, rng.uniform(0.05, 0.6, 7) + (np.arange(7) == 0))
    for name in ("mean", "stackexchange", "books", "table1"):
        goal = mixing.objective(name)
        i = [mixing.SOURCES.index(t) for t in goal.targets]  # a law of the objective's targets, as fitted
        w = mixing.best_mixture(mixing.Law(law.c[i], law.k[i], law.t[i]), goal, cap, FLOOR, CENTER, seed=seed,
                                count=4000)
        assert mixing.feasible(w, cap, FLOOR) and w.sum() == pytest.approx(1, abs=1e-9), (name, w, cap)
        if name == "stackexchange":
            assert w[-1] == pytest.approx(cap[-1], abs=1e-6)


# ---------------------------------------------------------------------------------------------- tables and errors
def swarm_rows(runs: mixing.Runs, finished=True) -> list[dict[str, str]]:
    """CSV rows as experiments.collect writes them for `runs` (one final row each, an earlier one too)."""
    rows = []
    for name, w, v in zip(runs.names, runs.weights, runs.values, strict=True):
        row = {"sweep": "mixture_swarm", "run": name, "step": "244", "tokens": "999424", "finished": str(finished),
               **{mixing.weight_column(s): repr(float(x)) for s, x in zip(mixing.SOURCES, w, strict=True)},
               **{f"eval/{s}/loss": repr(float(x)) for s, x in zip(mixing.SOURCES, v, strict=True)}}
        rows += [{**row, "step": "100", "tokens": "409600", **{f"eval/{s}/loss": "9.0" for s in mixing.SOURCES}}, row]
    return rows


def test_read_runs_takes_each_finished_runs_last_row(noisy):
    _, runs, _ = noisy
    rows = swarm_rows(runs) + [{**row, "run": "late", "finished": "False"} for row in swarm_rows(runs)[-2:]]
    rows += [{**row, "run": "zero", "eval/books/loss": ""} for row in swarm_rows(runs)[-2:]]
    rows += [{**row, "run": "trunk", "annealed": "False"} for row in swarm_rows(runs)[-2:]]
    read, notes = mixing.read_runs(rows)
    assert read.names == runs.names and notes[1:] == ["dropped 1 unfinished run(s): late",
                                                      "dropped 1 run(s) whose schedule does not anneal: trunk"]
    assert notes[0].startswith("dropped 1 run(s) with no row holding every column") and notes[0].endswith(": zero")
    np.testing.assert_allclose(read.values, runs.values)
    np.testing.assert_allclose(read.weights, runs.weights)
    cloze = [{**row, "eval/cloze/acc": "0.4"} for row in rows]
    task, _ = mixing.read_runs(cloze, "cloze")
    np.testing.assert_allclose(task.values, 0.6)  # the error rate is minimised


def _bad(rows, change):
    rows = [dict(row) for row in rows]
    change(rows)
    return rows


@pytest.mark.parametrize("change,objective,message", [
    (lambda rows: [row.update({"weight/books": "-0.1"}) for row in rows], "mean", r"weights must be finite and >= 0, got books=-0.1"),
    (lambda rows: [row.update({"weight/books": "0.9"}) for row in rows], "mean", r"weights sum to .*, expected 1"),
    (lambda rows: [row.update({"weight/reddit": "0"}) for row in rows], "mean", r"name unknown source\(s\) \['reddit'\]"),
    (lambda rows: [row.pop("weight/github") for row in rows], "mean", r"lacks the weight column\(s\) \['weight/github'\]"),
    (lambda rows: [row.pop("eval/arxiv/loss") for row in rows], "mean", r"lacks the column\(s\) \['eval/arxiv/loss'\]"),
    (lambda rows: None, "cloze", r"lacks the column\(s\) \['eval/cloze/acc'\]"),
    (lambda rows: None, "hellaswag", r"--objective='hellaswag' is not an objective"),
])
def test_bad_tables_and_objectives_are_errors_that_name_the_problem(noisy, change, objective, message):
    _, runs, _ = noisy
    with pytest.raises(ValueError, match=message):
        mixing.read_runs(_bad(swarm_rows(runs), change), objective)


def test_too_few_runs_and_an_impossible_constraint_are_errors(noisy):
    _, runs, _ = noisy
    with pytest.raises(ValueError, match="5 run.s. cannot fit the law model: it has 8 parameters"):
        mixing.fit(runs.subset(np.arange(5)), "law")
    with pytest.raises(ValueError, match="cannot fit the loglinear model"):
        mixing.fit(runs.subset(np.arange(7)), "loglinear")
    zero = runs.weights.copy()
    zero[0] = np.eye(7)[0]
    with pytest.raises(ValueError, match="every weight must be > 0; 1 run.s. give a source weight 0: r0"):
        mixing.fit(dataclasses.replace(runs, weights=zero), "loglinear")
    with pytest.raises(ValueError, match="no mixture meets the repetition constraint: the caps sum to"):
        mixing.best_mixture(known_law(), runs.objective, np.full(7, 0.1), FLOOR, CENTER)
    with pytest.raises(ValueError, match=r"no mixture meets .* \['stackexchange'\] cannot even get the floor"):
        mixing.check_feasible(mixing.caps(1e9, mixture_swarm.unique_tokens()), FLOOR)


def test_the_commands_fit_optimize_and_print_one_line_errors(noisy, tmp_path):
    _, runs, _ = noisy
    table = tmp_path / "swarm.csv"
    table.write_text(collect.to_csv(swarm_rows(runs)))
    command = [sys.executable, "-m", "experiments.mixing"]
    fit = subprocess.run([*command, "fit", f"--csv={table}", "--json", "--model=loglinear"], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    assert json.loads(fit.stdout)["cross_validation"][0]["objective"]["spearman"] > 0.5
    out = tmp_path / "optimum.json"
    subprocess.run([*command, "optimize", f"--csv={table}", "--bootstrap=3", f"--out={out}"], cwd=ROOT,
                   capture_output=True, text=True, check=True)
    optimum = json.loads(out.read_text())
    assert optimum["epochs"]["stackexchange"] <= 4 + 1e-9 and optimum["target_tokens"] == 4e6
    assert optimum["provenance"]["command"].startswith("python -m experiments.mixing optimize --csv=")
    again = subprocess.run([*command, "optimize", f"--csv={table}", f"--out={out}"], cwd=ROOT, capture_output=True,
                           text=True)
    assert again.returncode == 1 and len(again.stderr.strip().splitlines()) == 1
    assert again.stderr.startswith(f"error: --out={out} exists; results are never overwritten")
    bad = tmp_path / "bad.csv"
    bad.write_text(collect.to_csv(_bad(swarm_rows(runs), lambda rows: [row.pop("weight/c4") for row in rows])))
    few = tmp_path / "few.csv"
    few.write_text(collect.to_csv(swarm_rows(runs.subset(np.arange(5)))))
    for args, message in ((["fit", f"--csv={bad}"], "error: the CSV lacks the weight column(s) ['weight/c4']"),
                          (["fit", f"--csv={few}"], "error: 5 run(s) cannot fit the law model"),
                          (["fit", f"--csv={table}", "--objective=boolq"], "error: --objective='boolq' is not"),
                          (["optimize", f"--csv={table}", "--max-epochs=0.01"], "error: no mixture meets")):
        result = subprocess.run([*command, *args], cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert result.stderr.startswith(message)


# ---------------------------------------------------------------------------------------------- the study
def test_collect_writes_each_runs_weights_and_mixing_reads_them(tmp_path):
    config = mixture_swarm.get_config("size=d16l1,mix=3")
    workdir = tmp_path / "mixture_swarm" / "d16l1_1M_mix3"
    workdir.mkdir(parents=True)
    (workdir / "run.json").write_text(json.dumps({"sweep": "mixture_swarm", "run": workdir.name, "branch": None,
                                                  "config": config.to_dict()}))
    losses = {f"eval/{s}/loss": 3.0 + i / 10 for i, s in enumerate(corpus_spec.SOURCE_NAMES)}
    (workdir / "metrics.jsonl").write_text(json.dumps({"step": config.train.steps, "loss": 3.1, **losses}) + "\n")
    rows = collect.collect(str(tmp_path / "mixture_swarm"))
    expected = dict(mixture_swarm.mixtures())["mix=3"]
    np.testing.assert_allclose([rows[0][mixing.weight_column(s)] for s in corpus_spec.SOURCE_NAMES], expected, atol=1e-8)
    runs, _ = mixing.read_runs(scaling.read_csv_text(collect.to_csv(rows)))
    assert runs.names == ["d16l1_1M_mix3"] and runs.values[0, 1] == pytest.approx(3.1)


def test_the_swarm_file_lists_locked_runs_with_their_weights_and_the_targets_repetition():
    runs = sweep.expand(SWARM_FILE)
    assert len(runs) == 2 + 1 + 7 + mixture_swarm.SWARM
    assert runs[0].name == "d16l1_1M_table1" and runs[-1].name == f"d16l1_1M_mix{mixture_swarm.SWARM}"
    weights = np.array([[run.config.data.weights[s] for s in corpus_spec.SOURCE_NAMES] for run in runs])
    np.testing.assert_allclose(weights.sum(1), 1, atol=1e-6)
    assert mixing.feasible(weights, CAP, FLOOR - 1e-8).all()
    assert len(np.unique(weights.round(6), axis=0)) == len(runs) - 1  # Table 1's seeds share its weights
    assert all(run.config.is_locked and run.config.data.subsample.books == 0.25 for run in runs)
    assert mixture_swarm.get_config().data.weights.to_dict() == dict(mixing.TABLE1)
    for arg, message in (("size=d16l1,mix=47", r"mix=47 is not a draw"), ("size=d16l1,mix=2.5", "not a draw"),
                         ("size=d16l1,table1,uniform", "names 2 mixtures"), ("size=d16l1", "names 0 mixtures")):
        with pytest.raises(ValueError, match=message):
            mixture_swarm.get_config(arg)


@pytest.mark.slow  # `make test-slow` builds the corpus and the study's tokenizer first, so it never skips
def test_the_recorded_unique_tokens_are_the_built_corpus():
    config = mixture_swarm.get_config()
    counts = mixture_swarm.data_tokens(config)
    assert counts, "the corpus or the study's tokenizer is not built (make corpus study-tokenizer)"
    for name, count in counts.items():
        assert count / config.data.subsample[name] == pytest.approx(mixture_swarm.UNIQUE_TOKENS[name], rel=0.01)


# ---------------------------------------------------------------------------------------------- the check
def test_the_check_ranks_proxies_against_targets_and_reads_table1s_extra_tokens():
    """Target objectives a monotone function of the proxies' (rank correlation 1), two seeds 0.01 apart; Table 1
    at 4M, 6M and 8M tokens on a curve that crosses the best mixture's 4M value halfway (in log tokens) between
    6M and 8M."""
    law = known_law()
    weights = np.vstack([CENTER, mixing.by_tokens(mixture_swarm.unique_tokens()), mixing.swarm(4, 5, CENTER, FLOOR, CAP)])
    proxy = runs_of(law, weights, noise=0.0)
    proxy = mixing.Runs(proxy.names, proxy.sources, proxy.weights, proxy.values, proxy.objective, np.full(6, 1e6))
    proxy_objective = proxy.objective.combine(proxy.values)
    best = int(np.argmin(proxy_objective))
    names, w, values, tokens = [], [], [], []
    for i, weight in enumerate(weights):
        for seed in (0, 1):
            target_value = 0.8 * proxy_objective[i] + 0.005 * (-1) ** seed
            names.append(f"m{i}_s{seed}"), w.append(weight), values.append(np.full(7, target_value)), tokens.append(4e6)
    goal = 0.8 * proxy_objective[best]
    base = 0.8 * proxy_objective[0]
    y6, y8 = base - 0.6 * (base - goal), goal - 0.4 * (base - goal)  # crossing halfway between log 6M and log 8M
    for budget, y in ((6e6, y6), (8e6, y8)):
        for seed in (0, 1):
            names.append(f"t1_{budget:g}_s{seed}"), w.append(CENTER), values.append(np.full(7, y)), tokens.append(budget)
    target = mixing.Runs(names, mixing.SOURCES, np.array(w), np.array(values), mixing.objective("mean"), np.array(tokens))
    result = mixing.compare(proxy, target, 4e6, CENTER, proxy_tokens=1e6)
    assert result["spearman"] == pytest.approx(1.0) and result["spearman_mixtures"] == 6
    assert result["seed_noise"] == pytest.approx(0.01 / np.sqrt(2), rel=1e-6)
    versus = result["best_against_center"]
    assert versus["difference"] == pytest.approx(base - goal) and versus["beats_seed_noise"]
    assert versus["difference_se"] == pytest.approx(result["seed_noise"])
    assert versus["extra_tokens"]["budgets"] == [4e6, 6e6, 8e6]
    assert versus["extra_tokens"]["extra_fraction"] == pytest.approx(np.sqrt(6 * 8) / 4 - 1, rel=1e-6)


def test_the_target_file_lists_the_baselines_until_the_swarm_is_fitted_then_the_optimum_and_its_span(
        tmp_path, monkeypatch):
    from experiments.configs import mixture_target

    monkeypatch.setattr(mixture_target, "OPTIMUM", str(tmp_path / "optimum.json"))
    monkeypatch.setattr(mixture_target, "SWARM_CSV", str(tmp_path / "swarm.csv"))
    before = [spec_.split(",") for spec_ in mixture_target.sweep()]
    assert {item for run in before for item in run if item in ("table1", "uniform", "optimum")} == {"table1", "uniform"}
    with pytest.raises(ValueError, match="optimum.json does not exist yet"):
        mixture_target.get_config("size=d40l2,tokens=4e6,optimum")
    optimum = {"weights": dict(zip(mixing.SOURCES, [0.3, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1], strict=True))}
    (tmp_path / "optimum.json").write_text(json.dumps(optimum))
    law = known_law()
    names = [f"d16l1_1M_mix{k}" for k in range(1, 11)]
    weights = mixing.swarm(10, 0, CENTER, FLOOR, CAP)
    runs = runs_of(law, weights, noise=0.0)
    (tmp_path / "swarm.csv").write_text(collect.to_csv(swarm_rows(dataclasses.replace(runs, names=names))))
    picks = mixture_target.spanning()
    order = np.argsort(runs.objective.combine(runs.values)) + 1  # draws from best to worst
    assert picks[0] in order[:2] and picks[2] in order[-2:] and len(set(picks)) == 3
    after = mixture_target.sweep()
    assert sum(",optimum" in s for s in after) == 3 and sum(",mix=" in s for s in after) == 6
    config = mixture_target.get_config("size=d40l2,tokens=4e6,optimum,seed=1")
    assert config.data.weights.to_dict() == pytest.approx(optimum["weights"]) and config.seed == 1
    assert config.data.subsample.books == 1.0 and mixture_target.get_config("size=d16l1,tokens=1e6,optimum"
                                                                            ).data.subsample.books == 0.25
    assert mixture_target.estimated_seconds() + mixture_swarm.estimated_seconds() < 2.5 * 3600
