"""The scaling notebooks execute end to end (nbclient) on small results files made here: a CPU-style sweep drawn
from a known law, and pod results at the paper's sizes; every figure they promise is written."""

import json
import os

import numpy as np
import pytest

from experiments import collect, scaling

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
