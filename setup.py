"""GAN-derived image encoders (sketch-GAN, thin-GAN, BinGAN) for searching visual archives."""

from setuptools import find_packages, setup

setup(
    name="gan-encoder-zoo",
    version="0.1.0",
    description=__doc__,
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["zoo", "zoo.*", "export", "export.*", "serving", "serving.*"]),
    package_data={"zoo": ["weights/*.weights.h5", "weights/*.hash.npz", "weights/*.golden.npz",
                           "weights/manifest.json", "apps/web/static/*"],
                  "serving": ["*.config", "compose.yaml"]},
    install_requires=[
        "tensorflow-cpu>=2.21,<2.22",  # Keras 3; tensorflow-addons is not used (end-of-life)
        "keras>=3.10",
        "numpy>=2.0",  # bitwise_count: the region index's Hamming scan
        "h5py>=3.10",
        "pillow>=10",
        "tqdm>=4.66",
        "matplotlib>=3.8",
        "grpcio>=1.60",  # the serving client and server; TF Serving's stubs: see setup.sh
        "protobuf>=5",
        # the model server's REST API (serving/rest_api.py) and the search page (`zoo web`)
        "starlette>=0.40",
        "uvicorn>=0.30",
        "faiss-cpu>=1.8",  # archive index search (zoo.apps.index): flat and HNSW, float and binary
        # page regions (zoo.apps.proposals): connected components, dilation, median filter, NMS
        "opencv-python-headless>=4.8",
    ],
    extras_require={"test": ["pytest>=8"],
                    # `zoo web` (the search page) and its browser tests, which drive the
                    # Debian `chromium` package (setup.sh installs it), not a downloaded browser
                    "web": ["playwright>=1.45"],
                    # `zoo beam encode` (zoo/apps/beam_pipeline.py); it caps protobuf < 7,
                    # pillow < 13
                    "beam": ["apache-beam>=2.77,<3"]},
    entry_points={"console_scripts": ["zoo=zoo.apps.cli:main"]},
)
