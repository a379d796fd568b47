"""Shared by the evaluation tests: a SentencePiece tokenizer trained on real text, its Hugging Face twin, and a
small corpus laid out as data_pipeline.corpus writes one. The text is the Python documentation that ships with
the standard library (pydoc_data), so it is real prose and present on every machine."""

from __future__ import annotations

import io
import json
import os

VOCAB = 384  # 256 byte pieces, 3 control pieces and 125 merges


def real_text() -> list[str]:
    """The Python language reference's topics, one document each (about 460 kB of prose and examples)."""
    import pydoc_data.topics

    return [pydoc_data.topics.topics[key] for key in sorted(pydoc_data.topics.topics)]


def train_sentencepiece(path: str, vocab_size: int = VOCAB) -> str:
    """A BPE SentencePiece model with the corpus tokenizer's settings (data_pipeline.corpus), written to `path`."""
    import sentencepiece as spm

    lines = [line for doc in real_text() for line in doc.split("\n") if line.strip()]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, model_type="bpe", vocab_size=vocab_size, split_digits=True,
        byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, normalization_rule_name="identity",
        remove_extra_whitespaces=False, allow_whitespace_only_pieces=True, minloglevel=2)
    with open(path, "wb") as f:
        f.write(model.getvalue())
    return path


def save_hf_tokenizer(sentencepiece_path: str, out_dir: str) -> str:
    """The SentencePiece model as a Hugging Face LlamaTokenizer directory (vocabulary and merges taken through the
    sentencepiece API: transformers' own converter needs a protobuf runtime this venv does not have)."""
    import sentencepiece as spm
    import transformers
    from transformers.convert_slow_tokenizer import generate_merges

    sp = spm.SentencePieceProcessor(model_file=sentencepiece_path)
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    tokenizer = transformers.LlamaTokenizer(vocab=vocab, merges=generate_merges(vocab), unk_token="<unk>",
                                            bos_token="<s>", eos_token="</s>", add_bos_token=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def save_byte_level_bpe(out_dir: str, vocab_size: int = VOCAB) -> str:
    """A GPT-2-style byte-level BPE trained here on real text, saved as a Hugging Face tokenizer directory: 256 byte
    symbols, `<|endoftext|>` (id 0) as BOS and EOS, and merges; its post-processor adds no BOS, as GPT-2's."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(real_text(), trainer)
    transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|endoftext|>",
                                         eos_token="<|endoftext|>").save_pretrained(out_dir)
    return out_dir


def write_corpus(root: str, sources: dict[str, list[str]], train_text: str = "") -> str:
    """A corpus directory as data_pipeline.corpus lays it out: <source>/validation-00000-of-00001.jsonl with
    `sources`' documents, a train shard holding `train_text`, and a manifest."""
    manifest = {"version": 0, "sources": {}}
    for source, docs in sources.items():
        os.makedirs(os.path.join(root, source), exist_ok=True)
        splits = {}
        for split, texts in (("validation", docs), ("train", [train_text] if train_text else [])):
            path = os.path.join(root, source, f"{split}-00000-of-00001.jsonl")
            with open(path, "w") as f:
                f.writelines(json.dumps({"id": f"{source}/{i}", "text": t}) + "\n" for i, t in enumerate(texts))
            splits[split] = {"docs": len(texts), "shards": [{"path": os.path.relpath(path, root), "bytes": os.path.getsize(path)}]}
        manifest["sources"][source] = {"splits": splits}
    with open(os.path.join(root, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    return root


def prose_corpus(root: str) -> str:
    """A corpus of two sources of real prose (the longer reference topics), with a training split holding a
    sentinel sentence that no evaluation task may contain."""
    docs = [d for d in real_text() if len(d) > 2000]
    return write_corpus(root, {"reference": docs[:30], "more": docs[30:60]},
                        train_text="Sentinel training sentence that no task may contain. " * 50)


def save_random_hf_model(out_dir: str, vocab_size: int = VOCAB, max_len: int = 128, seed: int = 0) -> str:
    """A random grouped-query transformers LlamaForCausalLM (float32 safetensors) with weights of order one, as
    tests/test_convert.py builds them, so that its choices and greedy tokens are far from ties."""
    import torch
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, rms_norm_eps=1e-6, max_position_embeddings=max_len, bos_token_id=1, eos_token_id=2,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(config).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            p.copy_(1.0 + 0.2 * noise if "norm" in name else 0.2 * noise)
    model.save_pretrained(out_dir)
    return out_dir


def multiple_choice_records(count: int = 12, seed: int = 0) -> list[dict]:
    """Items of real text: a passage start, its true next 30 characters among 3 from other passages; the first
    two have an empty context (scored after BOS)."""
    import random

    docs = [" ".join(d.split()) for d in real_text() if len(d) > 500]
    rng = random.Random(seed)
    records = []
    for i, doc in enumerate(docs[:count]):
        cut = doc.index(" ", 60)
        others = [docs[j][200:230].strip() for j in rng.sample([k for k in range(len(docs)) if k != i], 3)]
        label = i % 4
        choices = others[:label] + [doc[cut + 1:cut + 31].strip()] + others[label:]
        records.append({"context": "" if i < 2 else doc[:cut], "choices": choices, "label": label})
    return records


def prompt_records(count: int = 8) -> list[dict]:
    """Generation prompts: the first 50 characters of real passages."""
    docs = [" ".join(d.split()) for d in real_text() if len(d) > 500]
    return [{"prompt": d[:50], "answer": d[50:60]} for d in docs[-count:]]
