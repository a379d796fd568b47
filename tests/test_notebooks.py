"""The scaling and mixture notebooks execute end to end (nbclient) on small results files made here: a CPU-style
sweep drawn from a known law, pod results at the paper's sizes, and a mixture swarm and its target runs drawn from
a known mixing law; every figure they promise is written."""

import json
import os

import numpy as np
import pytest

from experiments import collect, scaling
from llama_jax import corpus_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(ROOT, "experiments", "notebooks")
LAW = scaling.Law(E=2.0, A=120.0, B=900.0, alpha=0.3, beta=0.33)
SOURCES = {"commoncrawl": 0.0, "books": 0.35}  # each source's offset from the mixture's loss


def sweep_rows(sizes, budgets, batch_tokens: int, rng) -> list[dict]:
    """Rows as experiments.collect writes them: per size a stable phase (evaluated along the way) and one
    cooldown branch per budget whose final loss follows LAW with 0.3% noise."""
    rows = []
    for n in sizes:
        trunk = f"n{n:.0f}_stable"
        for tokens in np.geomspace(budgets[0] / 4, max(budgets), 8):
            loss = float(LAW.loss(n, tokens)) * 1.05
            rows.append(_row(trunk, n, tokens, loss, annealed=False))
        for tokens in budgets:
            loss = float(LAW.loss(n, tokens) * np.exp(rng.normal(0, 0.003)))
            rows.append(_row(f"n{n:.0f}_{tokens:.0f}", n, tokens, loss, annealed=True, branch=f"{trunk}@1"))
    return rows


def _row(run, n, tokens, loss, annealed, branch=""):
    return {"sweep": "test_sweep", "run": run, "step": int(tokens // 4096), "params": int(n * 1.4),
            "non_embedding_params": int(n), "tokens": float(tokens), "tokens_per_param": tokens / n,
            "flops": 6 * n * tokens, "loss": loss + 0.02, "lr": 1e-3, "eval/mixture/loss": loss,
            **{f"eval/{s}/loss": loss + offset for s, offset in SOURCES.items()},
            "finished": True, "annealed": annealed, "schedule": "wsd", "branch": branch}


def _execute(name: str, env: dict[str, str]) -> None:
    import nbclient
    import nbformat

    notebook = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
    # The fits run thousands of L-BFGS iterations: the kernel gets optimised code (conftest turns it off).
    env = {**env, "XLA_FLAGS": os.environ.get("XLA_FLAGS", "").replace("--xla_backend_optimization_level=0", "")}
    previous = {key: os.environ.get(key) for key in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        nbclient.NotebookClient(notebook, timeout=None, kernel_name="python3",
                                resources={"metadata": {"path": NOTEBOOKS}}).execute()
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key)
            else:
                os.environ[key] = value


def isoflop_study(directory, rng) -> None:
    """An IsoFLOP study of LAW in `directory`: cpu_isoflop.csv (3 budgets of 5 sizes around each N_opt, 0.3%
    noise, then the held-out runs at 10x) and the forecast.json made from its fit runs before them."""
    rows, budgets = [], (1e12, 4e12, 1.6e13)
    for budget in budgets:
        for n in float(LAW.compute_optimal(budget)[0]) * np.geomspace(0.25, 4, 5):
            tokens = budget / (6 * n)
            loss = float(LAW.loss(n, tokens) * np.exp(rng.normal(0, 0.003)))
            rows.append(_row(f"n{n:.0f}_{tokens:.0f}", n, tokens, loss, annealed=True))
    runs, _ = scaling.final_runs(scaling.read_csv_text(collect.to_csv(rows)), loss="eval/mixture/loss",
                                 params="non_embedding_params")
    budget = 10 * budgets[-1]
    sizes = [float(LAW.compute_optimal(budget)[0]) * f for f in (0.5, 1, 2)]
    forecast = scaling.make_forecast(runs, budget, sizes, bootstrap=8)
    (directory / "forecast.json").write_text(json.dumps(forecast))
    rows += [_row(f"held_{n:.0f}", n, budget / (6 * n), float(LAW.loss(n, budget / (6 * n))), annealed=True)
             for n in sizes]
    (directory / "cpu_isoflop.csv").write_text(collect.to_csv(rows))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_scaling_curves_notebook_draws_every_figure_and_recovers_the_law(tmp_path):
    rng = np.random.default_rng(0)
    rows = sweep_rows(np.geomspace(5e4, 6e5, 4), np.geomspace(5e5, 2e7, 5), 4096, rng)
    (tmp_path / "cpu_sweep.csv").write_text(collect.to_csv(rows))
    isoflop_study(tmp_path, rng)
    _execute("scaling_curves.ipynb", {"SCALING_RESULTS_DIR": str(tmp_path), "SCALING_BOOTSTRAP": "4",
                                            "SCALING_GRID": "coarse"})
    for png in ("figure1_train_loss.png", "figure1_heldout_loss.png", "surface.png", "llama_argument.png",
                "llama_argument_paper.png", "per_source.png", "isoflop_profiles.png", "n_opt.png", "forecast.png"):
        assert (tmp_path / png).stat().st_size > 10_000, png
    fits = json.loads((tmp_path / "fits.json").read_text())
    assert fits["fit"]["alpha"] == pytest.approx(LAW.alpha, abs=0.05)
    assert fits["fit"]["beta"] == pytest.approx(LAW.beta, abs=0.05)
    assert set(fits["fit"]["intervals"]) >= {"E", "A", "B", "alpha", "beta"}
    assert set(fits["per_source"]) == set(SOURCES)
    assert len(fits["llama_argument"]) == 3 and len(fits["llama_argument_paper"]) == 3
    study = fits["isoflop_study"]
    assert [p["status"] for p in study["profiles"]] == ["ok"] * 3
    assert study["approach_2"]["a"] == pytest.approx(LAW.a, abs=0.05)
    assert len(study["check"]["runs"]) == 3 and all(abs(e["error"]) < 0.02 for e in study["check"]["runs"])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_paper_scale_notebook_tabulates_the_sweep_and_plots_pod_results(tmp_path):
    rows = []
    for n, budget in ((6.7e9, 1.0e12), (13.0e9, 1.0e12), (32.5e9, 1.4e12), (65.2e9, 1.4e12)):
        for tokens in np.arange(2e11, budget + 1, 2e11):
            loss = float(scaling.CHINCHILLA.loss(n, tokens))
            rows.append({"sweep": "paper_sweep", "run": f"{n:.3g}_{tokens:.3g}", "step": int(tokens // 4194304),
                         "params": n, "non_embedding_params": n * 0.97, "tokens": tokens, "loss": loss,
                         "finished": True, "annealed": True})
    (tmp_path / "pod.csv").write_text(collect.to_csv(rows))
    _execute("paper_scale.ipynb", {"PAPER_RESULTS_DIR": str(tmp_path), "PAPER_CSV": "pod.csv", "PAPER_GRID": "coarse"})
    for png in ("paper_sweep_cost.png", "paper_figure1.png", "paper_surface.png", "paper_llama_argument.png"):
        assert (tmp_path / png).stat().st_size > 10_000, png


def mixture_rows(law, weights: np.ndarray, names: list[str], tokens: float, n: int, rng, curve: int = 1,
                 scale: float = 1.0) -> list[dict]:
    """Rows as experiments.collect writes them for runs of `weights` whose held-out losses follow `law` (times
    `scale`, plus 1/tokens decay along a `curve` of evaluations) with 0.01 nats of noise."""
    rows = []
    for name, w in zip(names, weights, strict=True):
        for k in range(1, curve + 1):
            at = tokens * k / curve
            losses = scale * law.predict(w[None])[0] + 0.5 * (tokens / at - 1) + rng.normal(0, 0.01, len(w))
            rows.append({"sweep": "mixture", "run": name, "step": int(at // 4096), "non_embedding_params": n,
                         "tokens": at, **{f"weight/{s}": x for s, x in zip(corpus_spec.SOURCE_NAMES, w, strict=True)},
                         **{f"eval/{s}/loss": y for s, y in zip(corpus_spec.SOURCE_NAMES, losses, strict=True)},
                         "finished": k == curve, "annealed": True})
    return rows


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_mixture_laws_notebook_fits_the_swarm_and_checks_the_targets(tmp_path):
    from experiments import mixing
    from experiments.configs import mixture_swarm, mixture_target

    rng = np.random.default_rng(0)
    center = mixture_swarm.table1()
    t = -rng.uniform(0.3, 1.0, (7, 7))
    t[np.arange(7), np.arange(7)] = -rng.uniform(3, 8, 7)
    law = mixing.Law(rng.uniform(1.5, 2.5, 7), rng.uniform(1, 2, 7), t)
    mixtures = mixture_swarm.mixtures()
    names = [f"d16l1_1M_{key.replace('=', '')}" for key in mixtures]
    swarm = mixture_rows(law, np.array(list(mixtures.values())), names, 1e6, 3376, rng)
    (tmp_path / "mixture_swarm.csv").write_text(collect.to_csv(swarm))
    runs, _ = mixing.read_runs(scaling.read_csv_text(collect.to_csv(swarm)))
    optimum = mixing.optimize_mixture(runs, mixture_swarm.caps(), mixture_swarm.FLOOR, bootstrap=4)
    (tmp_path / "mixture_optimum.json").write_text(json.dumps(optimum))
    best = np.array(list(optimum["weights"].values()))
    chosen = {"table1": center, "uniform": mixtures["uniform"], "optimum": best,
              **{f"mix{k}": mixtures[f"mix={k}"] for k in (3, 9, 27)}}
    target = []
    for seed in mixture_target.SEEDS:
        target += mixture_rows(law, np.array(list(chosen.values())), [f"d40l2_4M_{k}_seed{seed}" for k in chosen],
                               4e6, 39880, rng, curve=4, scale=0.8)
        for budget in (6e6, 8e6):
            target += mixture_rows(law, center[None], [f"d40l2_{budget:g}_table1_seed{seed}"], budget, 39880, rng,
                                   scale=0.8 - 0.02 * budget / 4e6)
    target += mixture_rows(law, best[None], ["d16l1_1M_optimum"], 1e6, 3376, rng)
    (tmp_path / "mixture_target.csv").write_text(collect.to_csv(target))
    _execute("mixture_laws.ipynb", {"MIXTURE_RESULTS_DIR": str(tmp_path), "MIXTURE_BOOTSTRAP": "4"})
    for png in ("mixture_fits.png", "mixture_cv.png", "mixture_optimum.png", "mixture_rank.png", "mixture_curves.png"):
        assert (tmp_path / png).stat().st_size > 10_000, png
    summary = json.loads((tmp_path / "mixture_fits.json").read_text())
    law_cv = summary["cross_validation"][0]
    assert law_cv["model"] == "law" and law_cv["objective"]["spearman"] > 0.8
    check = summary["check"]
    assert check["spearman_mixtures"] == 6 and check["spearman"] > 0.8
    assert check["best_against_center"]["beats_seed_noise"]
