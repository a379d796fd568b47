"""A model as the evaluators see it: parameters, their tokenizer, text-level log-likelihoods and greedy answers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from llama_jax.config import ModelConfig
from llama_jax.evaluation import scoring

if TYPE_CHECKING:
    from llama_jax.inference.tokenizer import Tokenizer


class Model:
    """`config` and `params` (host or device arrays) with `tokenizer`; scoring through `scorer` (one per config,
    built here unless shared, e.g. by the trainer across evaluations)."""

    def __init__(self, config: ModelConfig, params: Any, tokenizer: Tokenizer, *, scorer: scoring.Scorer | None = None,
                 truncate: bool = False):
        if tokenizer.vocab_size != config.vocab_size:
            raise ValueError(f"tokenizer {tokenizer.name} has {tokenizer.vocab_size} pieces but the model has "
                             f"vocab_size={config.vocab_size}; use the tokenizer the model was trained with")
        self.config, self.params, self.tokenizer = config, params, tokenizer
        self.scorer = scorer or scoring.Scorer(config)
        self.truncate = truncate  # score the last max_seq_len + 1 tokens of a longer request, as lm_eval's hf does

    def loglikelihood_tokens(self, requests: Sequence[scoring.TokenRequest]) -> list[scoring.Score]:
        """Scores of (context ids, continuation ids) requests."""
        return self.scorer(self.params, requests, truncate=self.truncate)

    def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> list[scoring.Score]:
        """log P(continuation | context) of (context, continuation) texts, tokenized as lm-evaluation-harness does."""
        return self.loglikelihood_tokens([scoring.encode_pair(self.tokenizer, c, t) for c, t in pairs])

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int, until: Sequence[str] = (),
                 temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0) -> list[str]:
        """Continuations of `prompts` (encoded after BOS if the tokenizer adds it; greedy unless temperature > 0),
        cut before the first of `until`; each stops at EOS, after max_new_tokens, or at the model's context. With
        `truncate`, a prompt keeps its last max_seq_len - max_new_tokens tokens, as lm-evaluation-harness's hf
        backend; else a prompt that fills the context is refused."""
        from llama_jax.inference import sampling

        ids = [self.tokenizer.encode(p, bos=self.tokenizer.add_bos) for p in prompts]
        if self.truncate and max_new_tokens < self.config.max_seq_len:
            ids = [i[-(self.config.max_seq_len - max_new_tokens):] for i in ids]

        def stop(tokens: list[int]) -> bool:
            text = self.tokenizer.decode(tokens)
            return any(s in text for s in until if s)

        out = sampling.generate(self.config, self.params, ids, max_new_tokens=max_new_tokens, temperature=temperature,
                                top_k=top_k, top_p=top_p, seed=seed, eos_id=self.tokenizer.eos_id,
                                stop=stop if any(until) else None, mesh=self.scorer.mesh, rules=self.scorer.rules)
        return [cut(self.tokenizer.decode(tokens), until) for tokens in out.tokens]


def cut(text: str, until: Sequence[str]) -> str:
    """`text` up to the first occurrence of any string of `until`."""
    for s in until:
        if s:
            text = text.split(s, 1)[0]
    return text


def load_model(checkpoint: str, *, tokenizer: str | None = None, dtype: str | None = None, rows: int = 8,
               truncate: bool = False, add_bos: bool | None = None) -> Model:
    """The Model of `checkpoint` (training workdir, orbax params, Meta or Hugging Face directory: weights.load)."""
    from llama_jax.inference import weights

    return model_of(weights.load(checkpoint, dtype=dtype), checkpoint, tokenizer=tokenizer, rows=rows,
                    truncate=truncate, add_bos=add_bos)


def model_of(loaded, checkpoint: str, *, tokenizer: str | None = None, rows: int = 8, truncate: bool = False,
             add_bos: bool | None = None) -> Model:
    """A Model of what weights.load gave for `checkpoint`, with `tokenizer` (SentencePiece file or HF tokenizer
    directory; default: the one beside the weights or the run's; `add_bos` forces BOS before texts on or off,
    default the tokenizer's own setting); parameters placed on the default device once."""
    import jax

    from llama_jax.inference import tokenizer as tokenizer_lib

    path = tokenizer or loaded.tokenizer
    if not path:
        raise FileNotFoundError(f"no tokenizer found beside {checkpoint}; give one (--tokenizer=PATH, lm_eval: "
                                "--model_args checkpoint=...,tokenizer=PATH): a SentencePiece model or a Hugging Face "
                                "tokenizer directory")
    tok = tokenizer_lib.load(path, loaded.config.vocab_size, add_bos=add_bos)
    params = jax.device_put(loaded.params)
    return Model(loaded.config, params, tok, scorer=scoring.Scorer(loaded.config, rows=rows), truncate=truncate)
