from setuptools import find_packages, setup

version = {}
with open("pn2v_tf/version.py") as f:
    exec(f.read(), version)

setup(
    name="pn2v_tf",
    version=version["__version__"],
    description="Probabilistic Noise2Void denoising for microscopy with TensorFlow / Keras 3, CSBDeep style",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["pn2v_tf", "pn2v_tf.*"]),
    python_requires=">=3.11",
    install_requires=[
        "keras>=3.0",
        "csbdeep>=0.8.2",
        "numpy",
        "scipy",
        "tifffile",
        "h5py",
        "tqdm",
        "matplotlib",
        # reads the rdf.yaml of bioimage.io packages (load_bioimageio) without the optional bioimageio extra
        "pyyaml",
        # arrays larger than memory (pn2v_tf.chunked): zarr / OME-Zarr storage, Dask scheduling on one
        # machine or a dask.distributed cluster
        "zarr>=3",
        "dask[array]>=2024.8",
        "distributed>=2024.8",
    ],
    extras_require={
        # TensorFlow comes as one of these: the CPU-only wheel is a fraction of the size.
        "cpu": ["tensorflow-cpu>=2.16"],
        "gpu": ["tensorflow[and-cuda]>=2.16"],
        "tf": ["tensorflow>=2.16"],
        "test": ["pytest", "pytest-xdist"],
        # export_bioimageio and the package's validation and model test (tested with pydantic
        # 2.12; bioimageio.spec 0.5.12 cannot serialise descriptions with pydantic 2.14)
        "bioimageio": ["bioimageio.spec>=0.5.12", "bioimageio.core>=0.11", "pydantic<2.13"],
        # the VST+BM3D row of benchmarks/fmd_table1.py (BM3D itself is not worth re-implementing)
        "benchmarks": ["bm3d>=4"],
    },
    entry_points={"console_scripts": ["pn2v = pn2v_tf.cli:main", "pn2v-demo = pn2v_tf.demo:main"]},
    license="BSD-3-Clause",
)
