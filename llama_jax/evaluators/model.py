"""A model as the evaluators see it: parameters, their tokenizer, text-level log-likelihoods and greedy answers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from llama_jax import scoring
from llama_jax.config import ModelConfig

if TYPE_CHECKING:
    from llama_jax.tokenizer import Tokenizer


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

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int, until: Sequence[str] = ()) -> list[str]:
        """Greedy continuations of `prompts` (encoded after BOS), cut before the first of `until` or EOS."""
        from llama_jax import sampling

        ids = [self.tokenizer.encode(p, bos=True) for p in prompts]
        longest = max((len(i) for i in ids), default=0)
        if longest + max_new_tokens > self.config.max_seq_len:
            raise ValueError(f"a prompt of {longest} tokens and {max_new_tokens} new tokens exceed the model's "
                             f"context of max_seq_len={self.config.max_seq_len}; shorten the prompt or ask for fewer")

        def stop(tokens: Sequence[int]) -> bool:
            return any(s in self.tokenizer.decode(tokens) for s in until)

        outputs = sampling.generate(self.config, self.params, ids, max_new_tokens=max_new_tokens, temperature=0.0,
                                    eos_id=self.tokenizer.eos_id, stop=stop if until else None)
        return [cut(self.tokenizer.decode(tokens), until) for tokens in outputs]


def cut(text: str, until: Sequence[str]) -> str:
    """`text` up to the first occurrence of any string of `until`."""
    for s in until:
        if s:
            text = text.split(s, 1)[0]
    return text
