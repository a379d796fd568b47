"""Evaluations chosen by name, one module per kind, the same from training (`Suite`) and from the command line
(`llama_jax.evaluation.evaluate`); `registry` resolves names:

    heldout          held-out loss per source (heldout.py)          eval/<source>/loss
    multiple choice  acc, acc_norm, acc_ratio (multiple_choice.py)  eval/<task>/acc_norm, ...
    exact match      closed-book QA (exact_match.py)                eval/<task>/exact_match

Task names (tasks.py has the file layouts): `heldout`; the offline set built from the corpus's held-out split,
`next_sentence` and `cloze` (offline.py); the paper's benchmarks, `boolq`, `piqa`, `siqa`, `hellaswag`,
`winogrande`, `arc_easy`, `arc_challenge`, `openbookqa`, `naturalquestions`, `triviaqa` (hub.py); or the path of
a .jsonl task file.
"""
