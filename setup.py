"""Install tdrl: ``pip install -c constraints.txt -e ".[dev,atari,mujoco]"``."""

from pathlib import Path

from setuptools import find_packages, setup

version = {}
for line in Path("tdrl/__init__.py").read_text().splitlines():
    if line.startswith("__version__"):
        version["v"] = line.split("=")[1].strip().strip('"')

EXTRAS = {
    "atari": ["ale-py>=0.11"],
    "mujoco": ["gymnasium[mujoco]>=1.0", "mujoco>=3.0"],
    # LunarLander and the other Box2D envs (gymnasium's box2d extra less its pygame fork).
    "box2d": ["box2d>=2.3.10"],
    "tb": ["tensorboard>=2.14"],
    "plot": ["matplotlib>=3.7"],
    # tdrl eval --video: PyAV encodes the frames; pygame renders the classic-control envs.
    "video": ["av>=12", "gymnasium[classic-control]>=1.0"],
    # Ray: tdrl launch --backend ray and RaySampler (seen working: ray 2.60.0).
    "ray": ["ray>=2.30"],
    "dev": ["pytest>=8", "pytest-timeout>=2.2", "pytest-xdist>=3.5", "ruff>=0.6", "mypy>=1.10", "tensorboard>=2.14"],
    "docs": ["sphinx>=7", "myst-parser>=2"],
    # Peers measured side by side in benchmarks/; never part of the core install.
    "bench": ["stable-baselines3>=2.3", "sb3-contrib>=2.3"],
}

setup(
    name="tdrl",
    version=version["v"],
    description="rlpyt's research RL architecture rebuilt on TorchRL and TensorDict",
    long_description=Path("README.md").read_text() if Path("README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["tdrl", "tdrl.*"]),
    package_data={"tdrl": ["presets.json"]},
    install_requires=[
        "torch>=2.4",
        "torchrl==0.14.1",
        "tensordict==0.14.3",
        "gymnasium>=1.0",
        "numpy>=1.24",
        "tqdm>=4.60",
    ],
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["tdrl=tdrl.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
