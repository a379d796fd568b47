"""Generate text from any checkpoint:

    python -m llama_jax.generate --checkpoint=PATH --prompt="The capital of France is" [--max_new_tokens=64]
        [--temperature=0.8 --top_k=40 --top_p=0.95 --seed=0] [--batch_file=prompts.txt] [--prompt_ids=1,5,9]
        [--tokenizer=PATH] [--dtype=bfloat16] [--json]

PATH is a training workdir, an orbax params directory, a Meta or a Hugging Face directory (`llama_jax.inference.weights`).
Text prompts (`--prompt`, or `--batch_file` with one prompt per line) are encoded with BOS, as the reference
does, by the tokenizer of the run or the one beside the weights (or `--tokenizer`); `--prompt_ids` gives the ids
of one prompt directly and needs no tokenizer. Generation stops at the tokenizer's EOS, at `--max_new_tokens`
or at the context length. Prints each continuation and the prefill and decode speed; `--json` prints one JSON
object instead: {"ids": [[...], ...], "text": [...] (with a tokenizer), "finish": [...], and the timings}.
"""

from __future__ import annotations

import argparse
import json

from llama_jax import cli
from llama_jax.config import DTYPES
from llama_jax.inference import sampling, weights
from llama_jax.inference import tokenizer as tokenizer_lib


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (`argv` without the program name; default sys.argv[1:]); bad usage is a cli.UsageError."""
    parser = argparse.ArgumentParser(prog="python -m llama_jax.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="training workdir, orbax, Meta or Hugging Face directory")
    parser.add_argument("--prompt", help="one text prompt")
    parser.add_argument("--batch_file", help="a text file of prompts, one per line, generated as one batch")
    parser.add_argument("--prompt_ids", help="comma-separated token ids of one prompt (no tokenizer needed)")
    parser.add_argument("--tokenizer", help="SentencePiece model or Hugging Face tokenizer directory "
                                            "(default: the run's, or the one beside the weights)")
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 is greedy")
    parser.add_argument("--top_k", type=int, default=0, help="keep the k most likely tokens (0: all)")
    parser.add_argument("--top_p", type=float, default=1.0, help="keep the most likely tokens holding this mass")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=DTYPES, help="parameter and compute dtype (default: the checkpoint's)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = cli.parse_args(parser, argv)
    given = [name for name in ("prompt", "batch_file", "prompt_ids") if getattr(args, name) is not None]
    if len(given) != 1:
        raise cli.UsageError(f"give exactly one of --prompt, --batch_file, --prompt_ids (got {given or 'none'})")
    return args


def read_prompts(args: argparse.Namespace, tok: tokenizer_lib.Tokenizer | None) -> list[list[int]]:
    """The prompts' token ids from --prompt_ids, or from --prompt / --batch_file through the tokenizer."""
    if args.prompt_ids is not None:
        try:
            return [[int(t) for t in args.prompt_ids.split(",")]]
        except ValueError:
            raise cli.UsageError(f"--prompt_ids={args.prompt_ids!r} is not comma-separated integers") from None
    if args.prompt is not None:
        texts = [args.prompt]
    else:
        with open(args.batch_file, encoding="utf-8") as f:
            texts = [line.rstrip("\n") for line in f if line.strip()]
        if not texts:
            raise ValueError(f"--batch_file {args.batch_file} holds no prompt (one per non-empty line)")
    if tok is None:
        raise ValueError(f"{args.checkpoint} comes with no tokenizer to encode text prompts; give --tokenizer=PATH "
                         "or the ids with --prompt_ids")
    return [tok.encode(text, bos=True) for text in texts]


def run(args: argparse.Namespace) -> dict:
    """Load, generate and return the result as the JSON object --json prints."""
    loaded = weights.load(args.checkpoint, dtype=args.dtype)
    config = loaded.config if args.dtype is None else loaded.config.replace(dtype=args.dtype)
    tokenizer_path = args.tokenizer or loaded.tokenizer
    tok = None if tokenizer_path is None else tokenizer_lib.load(tokenizer_path, config.vocab_size)
    prompts = read_prompts(args, tok)
    out = sampling.generate(
        config, loaded.params, prompts, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
        top_k=args.top_k, top_p=args.top_p, seed=args.seed, eos_id=None if tok is None else tok.eos_id)
    result = {"ids": out.tokens}
    if tok is not None:
        result["prompts"] = [tok.decode(ids) for ids in prompts]
        result["text"] = [continuation(tok, prompt, ids) for prompt, ids in zip(prompts, out.tokens, strict=True)]
    return result | {
        "finish": out.finish, "prompt_tokens": out.prompt_tokens, "new_tokens": sum(map(len, out.tokens)),
        "compile_s": out.compile_s, "prefill_s": out.prefill_s, "decode_s": out.decode_s,
        "prefill_tokens_per_s": out.prefill_tokens_per_s, "decode_tokens_per_s": out.decode_tokens_per_s,
    }


def continuation(tok: tokenizer_lib.Tokenizer, prompt: list[int], new: list[int]) -> str:
    """The text `new` adds to `prompt`, with its leading space (which decoding `new` alone would drop)."""
    before, after = tok.decode(prompt), tok.decode(prompt + new)
    return after[len(before):] if after.startswith(before) else tok.decode(new)


def format_result(result: dict) -> str:
    """The text a person reads: each prompt and its continuation, then the speeds."""
    blocks = []
    for i, ids in enumerate(result["ids"]):
        if "text" in result:
            blocks.append(f"{result['prompts'][i]}{result['text'][i]}")
        else:
            blocks.append(" ".join(map(str, ids)))
        blocks[-1] += f"\n[{len(ids)} tokens, {result['finish'][i]}]"
    speed = (f"prefill {result['prompt_tokens']} tokens in {result['prefill_s']:.3f} s "
             f"({result['prefill_tokens_per_s']:,.0f} tokens/s, time to first token); decode "
             f"{result['decode_tokens_per_s']:,.1f} tokens/s; compile {result['compile_s']:.1f} s")
    return "\n\n".join(blocks) + "\n\n" + speed


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = run(args)
    print(json.dumps(result) if args.json else format_result(result))


if __name__ == "__main__":
    cli.run(main)
