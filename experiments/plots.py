"""The scaling notebooks' figures, drawn from collected results (experiments.collect) and fits (experiments.scaling):
the notebooks call these and save what they return.

- figure1: the paper's Figure 1 layout, loss against training tokens, one curve per model size;
- surface: the fitted L(N, D) as iso-loss contours over compute and size, with its compute-optimal frontier
  next to Chinchilla's published one;
- llama_argument: tokens a smaller model needs to match the next size at its compute-optimal budget, and the
  inference FLOPs per token it saves;
- per_source: held-out loss of each data source against tokens, one curve per size;
- isoflop_profiles, n_opt_band, forecast_panel: Chinchilla's Figure 3 layout, N_opt(C) with its band beside
  Chinchilla's, and a forecast's predictions beside the observed held-out runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from experiments import scaling
from experiments.spec import format_tokens


def typed(rows: Iterable[dict[str, str]]) -> list[dict[str, Any]]:
    """CSV rows with numbers as floats, True/False as booleans and empty cells dropped."""
    out = []
    for row in rows:
        record: dict[str, Any] = {}
        for key, value in row.items():
            if value in ("", None):
                continue
            if value in ("True", "False"):
                record[key] = value == "True"
                continue
            try:
                record[key] = float(value)
            except ValueError:
                record[key] = value
        out.append(record)
    return out


def by_size(rows: list[dict[str, Any]], size: str = "non_embedding_params") -> dict[float, list[dict[str, Any]]]:
    """Rows grouped by model size, smallest first."""
    groups: dict[float, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row[size], []).append(row)
    return dict(sorted(groups.items()))


def final_rows(rows: list[dict[str, Any]], loss: str) -> list[dict[str, Any]]:
    """Each finished, annealed run's last row with a value of `loss` (the points fits use)."""
    last: dict[str, dict[str, Any]] = {}
    for row in rows:
        if loss in row and row.get("finished", True) and row.get("annealed", True):
            if row["run"] not in last or row["tokens"] >= last[row["run"]]["tokens"]:
                last[row["run"]] = row
    return sorted(last.values(), key=lambda r: (r["non_embedding_params"], r["tokens"]))


def _colors(n: int):
    import matplotlib.pyplot as plt

    return [plt.get_cmap("viridis")(x) for x in np.linspace(0.0, 0.85, max(n, 1))]


def figure1(rows: list[dict[str, Any]], loss: str = "loss", size: str = "non_embedding_params", title: str = ""):
    """Loss against training tokens per size: each run's logged curve (a stable phase thin, annealed runs
    solid) and the final point of every annealed run, as the paper's Figure 1 draws training loss."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    groups = by_size(rows, size)
    for color, (n, group) in zip(_colors(len(groups)), groups.items(), strict=True):
        for run in sorted({r["run"] for r in group}):
            curve = sorted((r["tokens"], r[loss]) for r in group if r["run"] == run and loss in r)
            if curve:
                annealed = all(r.get("annealed", True) for r in group if r["run"] == run)
                ax.plot(*zip(*curve, strict=True), color=color, lw=1.4 if annealed else 0.7,
                        alpha=1.0 if annealed else 0.6)
        ends = [(r["tokens"], r[loss]) for r in final_rows(group, loss)]
        if ends:
            ax.plot(*zip(*ends, strict=True), "o", color=color, ms=5, label=f"N = {format_tokens(n)}")
    ax.set_xscale("log")
    ax.set_xlabel("training tokens")
    ax.set_ylabel(f"{loss} (nats per token)")
    ax.set_title(title or "Loss against tokens, one curve per size (LLaMA Figure 1 layout)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(title="non-embedding params" if size == "non_embedding_params" else size)
    fig.tight_layout()
    return fig


def surface(law: scaling.Law, points: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
            reference: scaling.Law = scaling.CHINCHILLA, compute: tuple[float, float] | None = None):
    """Iso-loss contours of `law` over compute C = 6ND (x) and size N (y), its compute-optimal frontier, and the
    frontier of `reference` (Chinchilla's published fit) on the same axes; `points` (N, D, loss) are the runs."""
    import matplotlib.pyplot as plt

    if compute is None:
        c = 6 * points[0] * points[1] if points is not None else np.array([1e18, 1e24])
        compute = (float(c.min()) / 3, float(c.max()) * 30)
    cs = np.geomspace(*compute, 200)
    n_opt, _ = law.compute_optimal(cs)
    n_ref, _ = reference.compute_optimal(cs)
    low = min(n_opt.min(), n_ref.min(), points[0].min() if points is not None else np.inf) / 4
    high = max(n_opt.max(), n_ref.max(), points[0].max() if points is not None else 0) * 4
    ns = np.geomspace(low, high, 200)
    grid_c, grid_n = np.meshgrid(cs, ns)
    grid_l = law.loss(grid_n, grid_c / (6 * grid_n))
    fig, ax = plt.subplots(figsize=(7.5, 5))
    levels = np.quantile(grid_l, np.linspace(0.02, 0.9, 14))
    contour = ax.contour(grid_c, grid_n, grid_l, levels=np.unique(np.round(levels, 3)), cmap="viridis_r",
                         linewidths=0.8)
    ax.clabel(contour, fontsize=7, fmt="%.2f")
    ax.plot(cs, n_opt, color="C3", lw=2, label=f"fitted frontier N_opt ~ C^{law.a:.2f}")
    ax.plot(cs, n_ref, "k--", lw=1.5, label=f"Chinchilla (Hoffmann et al.) N_opt ~ C^{reference.a:.2f}")
    if points is not None:
        ax.scatter(6 * points[0] * points[1], points[0], c=points[2], cmap="viridis_r", s=22, edgecolor="k",
                   lw=0.4, zorder=3, label="runs (colour: final loss)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training compute C = 6ND (FLOPs)")
    ax.set_ylabel("parameters N")
    ax.set_title(f"L(N, D) = {law.E:.2f} + {law.A:.3g}/N^{law.alpha:.2f} + {law.B:.3g}/D^{law.beta:.2f}: iso-loss")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def llama_argument(rows: list[dict[str, Any]], title: str = ""):
    """Two panels from scaling.llama_argument's rows: tokens per parameter each size needs to match the next
    size at its compute-optimal budget (against that budget's), and the inference FLOPs per token it saves."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    labels = [f"{format_tokens(r['N'])}\n→ {format_tokens(r['N_next'])}" for r in rows]
    x = np.arange(len(rows))
    left.bar(x - 0.2, [r["D_next_opt"] / r["N_next"] for r in rows], 0.4, label="next size, compute-optimal")
    left.bar(x + 0.2, [min(r["tokens_per_param"], 1e6) for r in rows], 0.4, label="this size, to match it")
    left.set_yscale("log")
    left.set_ylabel("training tokens per parameter")
    left.set_xticks(x, labels)
    left.legend(fontsize=8)
    right.bar(x, [100 * r["inference_saving"] for r in rows], 0.5, color="C2")
    right.set_ylabel("inference FLOPs per token saved (%)")
    right.set_xticks(x, labels)
    fig.suptitle(title or "LLaMA's argument: a smaller model trained longer reaches the larger one's loss")
    fig.tight_layout()
    return fig


def per_source(rows: list[dict[str, Any]], sources: list[str], size: str = "non_embedding_params"):
    """One panel per source: its held-out loss against training tokens, one curve per size (evaluations of
    every run), final points of annealed runs marked."""
    import matplotlib.pyplot as plt

    cols = min(4, len(sources))
    fig, axes = plt.subplots((len(sources) + cols - 1) // cols, cols, figsize=(3.6 * cols, 3.0 * ((len(sources) + cols - 1) // cols)),
                             squeeze=False, sharex=True)
    groups = by_size(rows, size)
    for ax, source in zip(axes.flat, sources, strict=False):
        key = f"eval/{source}/loss"
        for color, (n, group) in zip(_colors(len(groups)), groups.items(), strict=True):
            stable = sorted((r["tokens"], r[key]) for r in group if key in r and not r.get("annealed", True))
            if stable:
                ax.plot(*zip(*stable, strict=True), color=color, lw=0.8, alpha=0.6)
            ends = [(r["tokens"], r[key]) for r in final_rows(group, key)]
            if ends:
                ax.plot(*zip(*ends, strict=True), "o-", color=color, ms=3, lw=1.2, label=format_tokens(n))
        ax.set_xscale("log")
        ax.set_title(source, fontsize=10)
        ax.grid(alpha=0.3, which="both")
    for ax in list(axes.flat)[len(sources):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, title="N", title_fontsize=7)
    fig.supxlabel("training tokens")
    fig.supylabel("held-out loss (nats per token)")
    fig.tight_layout()
    return fig


def isoflop_profiles(result: dict, title: str = ""):
    """Chinchilla's Figure 3 layout from scaling.isoflop: left, loss against N at each budget with its parabola
    and the minimum with its N_opt interval (budgets without a measured minimum drawn as points only); middle,
    N_opt against C with the fitted power law; right, D_opt against C."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.5))
    profiles = result["profiles"]
    colors = _colors(len(profiles))
    for p, color in zip(profiles, colors, strict=True):
        ns = np.exp(p["log_n"])
        axes[0].scatter(ns, p["loss"], color=color, s=16, label=f"C = {p['C']:.2g}")
        if p["status"] != "ok":
            continue
        x = np.linspace(np.log(min(p["fit_sizes"])), np.log(max(p["fit_sizes"])), 100)
        p0, p1, p2 = p["parabola"]
        axes[0].plot(np.exp(x), p0 + p1 * x + p2 * x**2, color=color, lw=1)
        axes[0].scatter([p["N_opt"]], [p["loss_opt"]], color=color, marker="*", s=90, edgecolor="k", zorder=3)
        if p["interval"]:
            axes[0].hlines(p["loss_opt"], *p["interval"], color=color, lw=3, alpha=0.5)
    ok = [p for p in profiles if p["status"] == "ok"]
    cs = np.array([p["C"] for p in ok])
    for ax, key, exponent, coefficient, label in ((axes[1], "N_opt", "a", "k_N", "N_opt"),
                                                  (axes[2], "D_opt", "b", "k_D", "D_opt")):
        n_intervals = np.array([p["interval"] or [p["N_opt"], p["N_opt"]] for p in ok]).reshape(-1, 2)
        values = np.array([p[key] for p in ok])
        bounds = n_intervals if key == "N_opt" else (cs / 6)[:, None] / n_intervals[:, ::-1]
        if len(ok):
            ax.errorbar(cs, values, yerr=_yerr(values, bounds), fmt="o", color="C0", capsize=3,
                        label="IsoFLOP minima (95%)")
        if exponent in result:
            grid = np.geomspace(cs.min() / 3, cs.max() * 3, 50)
            interval = result.get("intervals", {}).get(exponent)
            ci = f" [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else ""
            ax.plot(grid, result[coefficient] * grid ** result[exponent], color="C3",
                    label=f"{label} ~ C^{result[exponent]:.2f}{ci}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("C = 6ND (FLOPs)")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("non-embedding parameters N")
    axes[0].set_ylabel("final held-out loss")
    axes[0].legend(fontsize=7)
    fig.suptitle(title or "IsoFLOP profiles (approach 2)")
    fig.tight_layout()
    return fig


def _yerr(values: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """[2, n] error bar lengths below and above `values` to `bounds` [n, 2] (0 where a percentile interval of few
    resamples does not contain its point estimate)."""
    return np.maximum(np.stack([values - bounds[:, 0], bounds[:, 1] - values]), 0)


def n_opt_band(samples: dict[str, np.ndarray], law: scaling.Law, compute: tuple[float, float],
               minima: list[dict] | None = None, reference: scaling.Law = scaling.CHINCHILLA):
    """N_opt against C: the fit's (`law`) with the 95% band of its bootstrap `samples` (scaling.varpro arrays),
    Chinchilla's published one, and approach 2's minima with their intervals (`minima`: isoflop profiles)."""
    import matplotlib.pyplot as plt

    cs = np.geomspace(*compute, 100)
    low, high = scaling.n_opt_band(samples, cs)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.fill_between(cs, low, high, color="C3", alpha=0.2, label="95% bootstrap band")
    ax.plot(cs, law.compute_optimal(cs)[0], color="C3", label=f"this fit: N_opt ~ C^{law.a:.2f}")
    ax.plot(cs, reference.compute_optimal(cs)[0], "k--", label=f"Chinchilla: N_opt ~ C^{reference.a:.2f}")
    for p in (q for q in minima or [] if q["status"] == "ok"):
        bounds = np.array([p["interval"] or (p["N_opt"], p["N_opt"])])
        ax.errorbar([p["C"]], [p["N_opt"]], yerr=_yerr(np.array([p["N_opt"]]), bounds), fmt="o", color="C0",
                    capsize=3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("C = 6ND (FLOPs)")
    ax.set_ylabel("compute-optimal N")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def forecast_panel(forecast: dict, check: dict | None = None):
    """The pre-registered forecast: predicted final loss of each held-out size with its 95% prediction interval,
    and, once they have trained (`check`: scaling.check_forecast), the observed losses beside them."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ns = np.array([e["N"] for e in forecast["runs"]])
    predicted = np.array([e["loss"] for e in forecast["runs"]])
    intervals = np.array([e.get("interval") or [y, y] for e, y in zip(forecast["runs"], predicted, strict=True)])
    ax.errorbar(ns, predicted, yerr=_yerr(predicted, intervals), fmt="s", color="C0", capsize=4,
                label="predicted (95% prediction interval)")
    if check is not None:
        ax.scatter([e["N"] for e in check["runs"]], [e["observed"] for e in check["runs"]], color="C3", marker="x",
                   s=60, zorder=3, label="observed")
    ax.axvline(forecast["N_opt"], color="k", lw=1, ls=":", label=f"predicted N_opt {forecast['N_opt']:.3g}")
    if forecast.get("N_opt_interval"):
        ax.axvspan(*forecast["N_opt_interval"], color="k", alpha=0.06)
    ax.set_xscale("log")
    ax.set_xlabel("non-embedding parameters N")
    ax.set_ylabel("final held-out loss")
    ax.set_title(f"forecast at C = {forecast['budget']:.2g} FLOPs")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------ mixture laws
def mixture_fits(runs, law, center: np.ndarray):
    """Per target: the proxies' value against their weight of that source (log scale) and the fitted law along
    the line from `center` (Table 1) to the source alone (experiments.mixing.Law; targets named by source)."""
    import matplotlib.pyplot as plt

    targets = runs.objective.targets
    fig, axes = plt.subplots(1, len(targets), figsize=(2.6 * len(targets), 2.8), squeeze=False, sharey=False)
    for i, (ax, target) in enumerate(zip(axes[0], targets, strict=True)):
        j = runs.sources.index(target) if target in runs.sources else 0
        ax.scatter(runs.weights[:, j], runs.values[:, i], s=10, color="0.5", label="proxies")
        lam = np.linspace(-center[j] / (1 - center[j]) + 1e-3, 0.95, 100)
        line = center[None] + lam[:, None] * (np.eye(len(center))[j] - center)[None]
        ax.plot(line[:, j], law.predict(line)[:, i], color="C0", label="law (Table 1 to source)")
        ax.set_xscale("log")
        ax.set_title(target, fontsize=9)
        ax.set_xlabel(f"weight of {runs.sources[j]}", fontsize=8)
    axes[0][0].set_ylabel("held-out loss (nats)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def mixture_cv(runs, cvs: list[dict]):
    """Cross-validated predicted against observed, per target and for the objective, one colour per model."""
    import matplotlib.pyplot as plt

    targets = [*runs.objective.targets, "objective"]
    fig, axes = plt.subplots(1, len(targets), figsize=(2.4 * len(targets), 2.6), squeeze=False)
    observed = np.hstack([runs.values, runs.objective.combine(runs.values)[:, None]])
    for k, cv in enumerate(cvs):
        predicted = np.hstack([cv["predicted"], runs.objective.combine(cv["predicted"])[:, None]])
        for i, ax in enumerate(axes[0]):
            stats = cv["targets"][targets[i]] if i < len(targets) - 1 else cv["objective"]
            ax.scatter(observed[:, i], predicted[:, i], s=8, color=f"C{k}",
                       label=f"{cv['model']} rho {stats['spearman']:.2f}")
    for i, ax in enumerate(axes[0]):
        low, high = observed[:, i].min(), observed[:, i].max()
        ax.plot([low, high], [low, high], color="0.6", lw=0.8)
        ax.set_title(targets[i], fontsize=9)
        ax.set_xlabel("observed", fontsize=8)
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel(f"{cvs[0]['folds']}-fold predicted")
    fig.tight_layout()
    return fig


def mixture_optimum(result: dict, center: dict[str, float]):
    """The optimum's weights beside Table 1's, with each weight's spread over the bootstrap's optima and its cap."""
    import matplotlib.pyplot as plt

    names = list(result["weights"])
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.bar(x - 0.2, [center[n] for n in names], 0.4, label="Table 1", color="0.6")
    optimum = np.array([result["weights"][n] for n in names])
    interval = result.get("weights_interval")
    yerr = _yerr(optimum, np.array([interval[n] for n in names])) if interval else None
    ax.bar(x + 0.2, optimum, 0.4, yerr=yerr, capsize=3, label=f"predicted optimum ({result['objective']})", color="C0")
    ax.scatter(x + 0.2, [min(result["caps"][n], 1) for n in names], marker="_", s=200, color="C3", label="cap")
    ax.set_xticks(x, names, rotation=30, fontsize=8)
    ax.set_ylabel("sampling weight")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def mixture_rank(result: dict):
    """Proxy against target objective for each mixture trained at both sizes, with the rank correlation."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3.5))
    rows = [r for r in result["mixtures"] if r["proxy"] is not None]
    ax.scatter([r["proxy"] for r in rows], [r["target"] for r in rows], color="C0")
    for r in rows:
        ax.annotate(r["runs"][0].split("_", 2)[-1], (r["proxy"], r["target"]), fontsize=6)
    ci = result.get("spearman_interval") or [float("nan")] * 2
    ax.set_title(f"Spearman rho {result.get('spearman', float('nan')):.2f} [{ci[0]:.2f}, {ci[1]:.2f}]", fontsize=9)
    ax.set_xlabel(f"proxy {result['objective']} objective")
    ax.set_ylabel("target objective")
    fig.tight_layout()
    return fig


def mixture_curves(rows: list[dict[str, Any]], objective, sources: tuple[str, ...]):
    """The target runs' objective against training tokens (experiments.collect rows with every target), one
    curve per run."""
    import matplotlib.pyplot as plt

    columns = objective.columns
    fig, ax = plt.subplots(figsize=(6, 3.5))
    runs = sorted({row["run"] for row in rows if all(c in row for c in columns)})
    for k, run in enumerate(runs):
        points = sorted((row["tokens"], row) for row in rows if row["run"] == run and all(c in row for c in columns))
        values = np.array([[row[c] for c in columns] for _, row in points])
        values = 1 - values if objective.kind == "error" else values
        ax.plot([t for t, _ in points], objective.combine(values), marker="o", ms=2, color=_colors(len(runs))[k],
                label=run)
    ax.set_xlabel("training tokens")
    ax.set_ylabel(f"{objective.name} objective")
    ax.legend(fontsize=5, ncol=2)
    fig.tight_layout()
    return fig
