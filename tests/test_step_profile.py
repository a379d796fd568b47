"""benchmarks/step_profile.py: a traced program's XLA:CPU thunks are found, matched by name to the compiled HLO, and
attributed to the model part, pass and kind their JAX operation names."""

import tempfile

import jax
import jax.numpy as jnp

from benchmarks import step_profile


def test_every_thunk_of_a_traced_program_is_matched_to_its_hlo_instruction():
    f = jax.jit(lambda a, b: jnp.tanh(a @ b).sum())
    a = jnp.ones((128, 128))
    compiled = f.lower(a, a).compile()
    index = step_profile.hlo_index(compiled.as_text())
    assert any(info["op_name"].endswith("dot_general") for info in index.values())
    compiled(a, a).block_until_ready()
    directory = tempfile.mkdtemp()
    with jax.profiler.trace(directory):
        for _ in range(3):
            compiled(a, a).block_until_ready()
    times = step_profile.thunk_times(directory)
    assert times and all(ns >= 0 for ns in times.values())
    assert set(times) <= set(index), set(times) - set(index)  # wrappers excluded, every thunk an instruction
    kinds = {step_profile.classify(name, index[name])[2] for name in times}
    assert "matmul" in kinds


def test_operations_are_attributed_to_the_part_and_pass_they_come_from():
    def info(op_name, opcode="fusion"):
        return {"opcode": opcode, "kind": "kLoop", "op_name": op_name}

    cases = {
        "jit(train_step)/jvp(LLaMA)/closed_call/layers/attention/btkgh,bskh->bkgts/dot_general":
            ("attention", "forward", "matmul"),
        "jit(train_step)/transpose(jvp(LLaMA))/closed_call/layers/feed_forward/dot_general":
            ("feed_forward", "backward", "matmul"),
        "jit(train_step)/jvp(LLaMA)/dot_general": ("output", "forward", "matmul"),  # the vocabulary projection
        "jit(train_step)/jvp()/exp": ("output", "forward", "elementwise/reduction"),  # the loss's softmax
        "jit(train_step)/jvp(LLaMA)/closed_call/layers/attention_norm/rsqrt": ("norms", "forward",
                                                                               "elementwise/reduction"),
        "jit(train_step)/sqrt": ("optimizer", "update", "elementwise/reduction"),
    }
    for op_name, expected in cases.items():
        name = "ynn_fusion.3" if expected[2] == "matmul" else "loop_fusion.1"
        assert step_profile.classify(name, info(op_name)) == expected, op_name
    assert step_profile.classify("copy.7", info("jit(train_step)/jvp(LLaMA)/transpose", "copy"))[2] == "copy/transpose"
    assert step_profile.classify("mystery", None) == ("unmatched", "unmatched", "other")
