"""The evaluations a training run makes every `evals.every` steps (`config.evals`), as metrics lines
`eval/<task>/<metric>` next to the loss: the data for the paper's Figure 2 (accuracy against training tokens)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from llama_jax import corpus_spec
from llama_jax.evaluation import scoring
from llama_jax.evaluation.evaluators import heldout, offline, registry
from llama_jax.evaluation.evaluators.tasks import HELDOUT
from llama_jax.evaluation.loaded_model import Model
from llama_jax.train import step as ts


def task_dir(config) -> str:
    """Where the run's task files live (config.evals.task_dir, default beside the corpus: .cache/tasks)."""
    return config.evals.task_dir or offline.default_task_dir(corpus_spec.corpus_dir(config.data))


class Suite:
    """`config.evals.tasks`, resolved and checked when training starts (offline tasks built if missing), then
    run on the current parameters by `suite(params)`."""

    def __init__(self, config, mesh, make_eval_streams: Callable[[], dict[str, Iterable]]):
        self.config, self.mesh, self.make_eval_streams = config, mesh, make_eval_streams
        names = registry.check_names(config.evals.tasks) if config.evals.tasks else []
        self.every = config.evals.every or config.train.eval_every
        self.heldout = HELDOUT in names
        self.tasks = [registry.resolve(n, task_dir=task_dir(config), corpus_dir=corpus_spec.corpus_dir(config.data))
                      for n in names if n != HELDOUT]
        self.eval_step = ts.make_eval_step(config, mesh) if self.heldout else None
        self.streams = None  # the held-out streams, built at the first evaluation
        if self.tasks:
            from llama_jax.inference import tokenizer as tokenizer_lib

            cfg = ts.model_config(config)
            self.tokenizer = tokenizer_lib.load(corpus_spec.tokenizer_path(config.data), cfg.vocab_size)
            self.scorer = scoring.Scorer(cfg, rows=config.evals.rows, mesh=mesh, train_config=config)

    def due(self, step: int) -> bool:
        """Whether the run evaluates after `step` updates: every `evals.every` steps, at the last, and before the
        first when `evals.initial`."""
        if step == 0 and not self.config.evals.initial:
            return False
        return bool(self.heldout or self.tasks) and (step % self.every == 0 or step == self.config.train.steps)

    def __call__(self, params) -> dict[str, float]:
        """{'eval/<source>/loss': nats, 'eval/<task>/<metric>': value} for `params`."""
        results = {}
        if self.heldout:
            self.streams = self.streams or self.make_eval_streams()
            results.update(heldout.evaluate(self.eval_step, params, self.streams, self.config, self.mesh))
        if self.tasks:
            model = Model(self.scorer.config, params, self.tokenizer, scorer=self.scorer)
            for task in self.tasks:
                metrics = registry.evaluate(model, task, self.config.evals.max_items)
                results.update({f"eval/{task.name}/{metric}": value for metric, value in metrics.items()})
        return results
