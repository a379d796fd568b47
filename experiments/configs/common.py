"""The one base config every experiment file starts from; each section is owned by one part of the code.

An experiment file calls `base_config(preset)`, changes what differs, and returns it locked, so that a
command-line override naming a field that does not exist (`--config.train.stpes=10`) is an error.
"""

from __future__ import annotations

import ml_collections

from experiments import spec
from llama_jax.config import get_preset
from llama_jax.corpus_spec import LLAMA_MIXTURE  # Table 1's sampling proportions

# Table 2: peak learning rate and training tokens of the paper's four models.
TABLE2 = {
    "llama_7b": (3.0e-4, 1.0e12),
    "llama_13b": (3.0e-4, 1.0e12),
    "llama_33b": (1.5e-4, 1.4e12),
    "llama_65b": (1.5e-4, 1.4e12),
}


def base_config(preset: str) -> ml_collections.ConfigDict:
    """The paper's recipe (§2.3, Table 2) around the model preset `preset`, unlocked for the caller to edit."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    # Fields of llama_jax.config.ModelConfig; `--config.model.n_layers=4` overrides one.
    c.model = ml_collections.ConfigDict(get_preset(preset).to_dict())
    c.model.lock()
    c.model_preset = preset

    c.train = ml_collections.ConfigDict()
    c.train.steps = 1000
    c.train.seq_len = 2048
    c.train.global_batch_size = 2048  # sequences; 2048 x 2048 = 4M tokens (Table 2)
    # Derived, never set: follows both fields through every override (an ml_collections FieldReference).
    c.train.tokens_per_step = c.train.get_ref("global_batch_size") * c.train.get_ref("seq_len")
    c.train.microbatches = 1  # gradient accumulation: the global batch is split into this many steps
    c.train.loss_chunk_size = 0  # > 0: the loss computes float32 logits this many positions at a time
    c.train.document_mask = True  # attention stays inside each packed document (False: plain causal)
    c.train.log_every = 10
    c.train.eval_every = 500
    c.train.eval_batches = 8
    c.train.profile_step = -1  # >= 0: write a profiler trace of that step into WORKDIR/profile

    # Evaluations during training (llama_jax.evaluation.evaluators), logged as eval/<task>/<metric>: `heldout` (loss per
    # source on train.eval_batches batches), the offline set built from the corpus's held-out split
    # (`next_sentence`, `cloze`), the paper's benchmarks (`boolq`, ..., files in evals.task_dir) or .jsonl paths.
    c.evals = ml_collections.ConfigDict()
    c.evals.tasks = ("heldout",)
    c.evals.every = 0  # steps between evaluations (and after the last step); 0 means train.eval_every
    c.evals.initial = False  # also evaluate the untrained model (step 0: where accuracy curves start, at chance)
    c.evals.max_items = 0  # items per task (its first ones); 0 means all
    c.evals.rows = 8  # packed rows per scoring batch
    c.evals.task_dir = ""  # "" means beside the corpus: .cache/tasks for the embedded one

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.peak_lr = 3.0e-4
    c.optimizer.warmup_steps = 2000
    c.optimizer.final_lr_fraction = 0.1  # cosine decays to 10% of the peak
    c.optimizer.schedule = "cosine"  # the paper's; "wsd": warmup-stable-decay (llama_jax.train.optim)
    c.optimizer.cooldown_fraction = 0.2  # "wsd" only: the last 20% of the steps decay (Hägele et al. 2024)
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.95
    c.optimizer.eps = 1e-8  # not stated in the paper
    c.optimizer.weight_decay = 0.1
    # Not stated in the paper; decaying only matrices (not norms or embeddings) is the common convention.
    c.optimizer.decay_embeddings_and_norms = False
    c.optimizer.clip_norm = 1.0

    c.mesh = ml_collections.ConfigDict()
    # Sizes of the mesh axes within a slice (ICI); -1 takes the remaining devices.
    c.mesh.data = 1
    c.mesh.fsdp = -1
    c.mesh.sequence = 1
    c.mesh.tensor = 1
    # Across slices (DCN) for multi-slice pods; 1 means a single slice.
    c.mesh.dcn_data = 1
    c.mesh.dcn_fsdp = 1
    # Logical axis -> mesh axes, in priority order (llama_jax.sharding). Flax never uses a mesh axis twice in
    # one array: activations [batch, length, embed] shard batch over data+fsdp and length over sequence, so
    # embed stays whole there, while parameters shard embed over fsdp+sequence (ZeRO-3) and
    # heads/mlp/vocab over tensor (Megatron).
    c.mesh.rules = (
        ("batch", ("data", "fsdp")),
        ("length", "sequence"),
        ("embed", ("fsdp", "sequence")),
        ("heads", "tensor"),
        ("kv_heads", "tensor"),
        ("mlp", "tensor"),
        ("vocab", "tensor"),
        ("head_dim", None),
        ("layers", None),
        ("norm", None),
        ("cache_length", None),  # decoding's key/value cache (llama_jax.inference.sampling)
    )

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_steps = 1000
    c.checkpoint.keep = 3
    c.checkpoint.keep_steps = ()  # also saved, and never deleted: where cooldown branches start
    c.checkpoint.async_save = True

    c.data = ml_collections.ConfigDict()
    c.data.source = "mixture"  # "mixture" (data_pipeline) or "synthetic" (random tokens, no TensorFlow)
    c.data.weights = ml_collections.ConfigDict(LLAMA_MIXTURE)
    c.data.corpus_dir = ""  # "" means the embedded default corpus, built by `make corpus`
    c.data.tokenizer = ""  # path to a SentencePiece model; "" means the one trained for the corpus
    c.data.shuffle_buffer = 1024  # packed rows per source (shuffle files per epoch, then rows)
    # Where each source's documents live; "" is the embedded corpus. See data_pipeline/sources.py for
    # "jsonl:<glob>", "tfrecord:<glob>", "tfds:<name>" and "pretokenized:<dir>".
    c.data.sources = ml_collections.ConfigDict({name: "" for name in LLAMA_MIXTURE})
    c.data.normalize_weights = False  # True divides data.weights by their sum; False requires they sum to 1
    c.data.max_doc_chars = 1 << 20  # longer documents are cut into consecutive pieces of this many characters
    c.data.threads = 0  # tokenizer and tf.data threads per host; 0 = half the host's cores
    return c


def paper_config(preset: str) -> ml_collections.ConfigDict:
    """The paper's run of `preset` on accelerators: Table 2's peak LR and token count (in 4M-token steps) for the
    four paper models, bfloat16 compute over float32 master weights, and the paper's checkpointing (§2.4: keep
    the linear-layer outputs, recompute the rest). Unlocked for the caller to edit."""
    c = base_config(preset)
    if preset in TABLE2:
        c.optimizer.peak_lr, tokens = TABLE2[preset]
        c.train.steps = round(tokens / c.train.tokens_per_step)
    c.model.dtype = "bfloat16"
    c.model.remat_policy = "save_linear"
    return c


def cpu_study_config(dim: int, n_layers: int, non_embedding: int, tokens: float, peak_lr: float, *,
                     vocab_size: int, seq_len: int, batch: int, tokenizer: str, cooldown: float,
                     stable: bool = False, seed: int = 0) -> ml_collections.ConfigDict:
    """One run of the CPU studies (scaling sweeps, mixture swarms): a LLaMA of `dim` x `n_layers` (heads of 16,
    SwiGLU hidden a multiple of 16) on `tokens` tokens, trained warmup-stable-decay (Hägele et al. 2024): warmup
    of about N tokens (at least 10 steps), the peak rate held, the last `cooldown` of the steps decayed to 0, or
    no decay for a stable phase (`stable`, which its budgets' cooldowns branch from); AdamW's beta2 0.99 for
    runs of a few hundred steps (experiments/configs/cpu_sweep.py gives the reasons). Unlocked: the caller sets
    what its study differs in (evaluation, data weights, kept checkpoints) and locks it."""
    c = base_config("tiny")
    c.model.dim, c.model.n_layers, c.model.n_heads = dim, n_layers, dim // 16
    c.model.multiple_of, c.model.vocab_size, c.model.max_seq_len = 16, vocab_size, seq_len
    c.data.tokenizer = tokenizer
    c.train.seq_len, c.train.global_batch_size = seq_len, batch
    c.train.steps = spec.steps_for(tokens, batch, seq_len)
    c.train.log_every = 25
    c.seed = seed
    c.optimizer.peak_lr = peak_lr
    c.optimizer.b2 = 0.99
    c.optimizer.warmup_steps = max(10, round(non_embedding / (batch * seq_len)))
    c.optimizer.schedule = "wsd"
    c.optimizer.final_lr_fraction = 0.0
    c.optimizer.cooldown_fraction = 0.0 if stable else cooldown
    c.checkpoint.every_steps, c.checkpoint.keep = 500, 1
    return c
