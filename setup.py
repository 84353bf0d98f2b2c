"""bertjax: pretrain and study BERT-style encoders in JAX/Flax."""
from setuptools import find_packages, setup

# Ranges are the ones installed and tested (CPU, Python 3.11): lower bound = oldest tested.
INSTALL_REQUIRES = [
    "jax>=0.10.2,<0.11",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.13",
    "tensorflow-datasets>=4.9.10,<5",
    "array-record>=0.8.6,<0.9",
    # TFDS 4.9.10 needs it to build datasets whose builder class lives inside a package.
    "importlib_resources>=7.1,<8",
    "grain>=0.2.18,<0.3",
    "sentencepiece>=0.2.3,<0.3",
    "numpy>=2.4,<3",
    "ml-collections>=1.1.0,<2",
    "absl-py>=2.1,<3",
    "tqdm>=4.67,<5",
    "tensorboardX>=2.6.5,<3",
    "blingfire>=0.1.8,<0.2",
    "scikit-learn>=1.9,<2",
    "scipy>=1.17,<2",
    # CoNLL-2003's entity-level scores (conlleval's chunk rules); bertjax/finetune/ner/metric.py.
    "seqeval>=1.2.2,<1.3",
    # WordPiece (BERT's vocab.txt) for imported checkpoints; a small Rust wheel, no torch.
    "tokenizers>=0.23.3,<0.24",
    # Study figures (bertjax/study.py), written as PNG and SVG with the Agg backend.
    "matplotlib>=3.11.2,<4",
]

setup(
    name="bertjax",
    version="0.1.0",
    description="Pretrain BERT from scratch in JAX/Flax: MLM+NSP, GLUE fine-tuning, ablations.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["bertjax", "bertjax.*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "test": ["pytest>=9.0,<10"],
        # Checkpoint import/export and parity tests against transformers. torch is pinned to
        # the release tested here (its CPU build); any torch that transformers supports works.
        "interop": ["torch==2.13.0", "transformers>=5.23,<6", "safetensors>=0.8,<1"],
        # Reading Google's original TensorFlow checkpoints (scripts/convert_checkpoint.py).
        "tf": ["tensorflow-cpu>=2.21,<2.22"],
    },
)
