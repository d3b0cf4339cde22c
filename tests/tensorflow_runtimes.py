"""Older TensorFlow runtimes for the export tests, each built once into the user's cache folder.

- TensorFlow 2.12, the oldest for Python 3.11: a virtual environment of this Python.
- TensorFlow 2.7.4 and 2.10.1, the TensorFlow 2 engines that deepImageJ (JDLL) installs in Fiji:
  they need Python <= 3.10. Python 3.9 comes from Debian 11 (bullseye) packages, downloaded with
  ``apt-get download`` through a private sources list and unpacked with ``dpkg -x`` (no
  installation into the system), and TensorFlow from PyPI with ``pip install --target`` for
  Python 3.9, with pins for the packages that have dropped Python 3.9 since.

Each is built in a temporary folder and renamed when complete, so an interrupted build is started
again, not used. A test that cannot have a runtime is skipped with the reason (e.g. no network, no
``apt-get``).
"""

import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

VENV_TENSORFLOW = "2.12"
DEEPIMAGEJ_TENSORFLOWS = ("2.7.4", "2.10.1")

BULLSEYE_SOURCES = ("deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian "
                    "bullseye main\n"
                    "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
                    "http://deb.debian.org/debian-security bullseye-security main\n")
# TensorFlow 2.7 imports distutils; the interpreter needs OpenSSL 1.1, libffi 7 and mpdecimal 2.5
PYTHON39_PACKAGES = ("python3.9-minimal", "libpython3.9-minimal", "libpython3.9-stdlib", "python3.9", "libssl1.1",
                     "libffi7", "libmpdec3", "python3-distutils=3.9.2-1", "python3-lib2to3=3.9.2-1")
# the newest releases that still install for Python 3.9 and work with these TensorFlows
PYTHON39_PINS = ("numpy<1.24", "protobuf<3.20", "absl-py==1.4.0", "urllib3==1.26.20", "requests==2.31.0",
                 "typing-extensions==4.7.1")


class Runtime:
    """A Python with a given TensorFlow: ``command`` to run it, ``env`` to run it with."""

    def __init__(self, python, env=None):
        self.command = [str(python)]
        self.env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        self.env.update(env or {})


def cache_folder():
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pn2v_tf"


def tensorflow_runtime(version):
    """A :class:`Runtime` with TensorFlow ``version`` (one of VENV_TENSORFLOW, DEEPIMAGEJ_TENSORFLOWS)."""
    if version == VENV_TENSORFLOW:
        return _venv_runtime(version)
    if version in DEEPIMAGEJ_TENSORFLOWS:
        return _python39_runtime(version)
    raise ValueError(f"no recipe for TensorFlow {version}")


def _build_once(target, build, what):
    """Make folder ``target`` with ``build(tmp)`` in a temporary sibling renamed when complete; test
    processes running side by side (pytest-xdist) wait for one another's build of the same folder."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(target.parent / (target.name + ".lock")):
        if target.exists():
            return target
        return _build(target, build, what)


@contextlib.contextmanager
def _exclusive(lock_path):
    """Hold an exclusive lock on ``lock_path`` (a no-op where ``fcntl`` is missing, i.e. on Windows)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _build(target, build, what):
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
    try:
        build(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished it first
            pass
    except subprocess.TimeoutExpired as error:
        pytest.skip(f"cannot make {what}: {error}")
    except OSError as error:
        pytest.skip(f"cannot make {what}: {error}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _run(command, what, **kwargs):
    """Run a build step; skip the test (naming ``what`` and the last line of the error) if it fails."""
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        last = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:] or [f"exit code {result.returncode}"]
        pytest.skip(f"cannot make {what}: {last[0]}")
    return result


def _venv_runtime(version):
    if sys.version_info >= (3, 12):
        pytest.skip(f"TensorFlow {version} has no wheels for Python {sys.version_info[0]}.{sys.version_info[1]}")
    what = f"a virtual environment with TensorFlow {version}"
    venv = cache_folder() / f"tf{version.replace('.', '')}-venv"
    python = Path("Scripts/python.exe" if os.name == "nt" else "bin/python")

    def build(tmp):
        _run([sys.executable, "-m", "venv", tmp], what, timeout=300)
        _run([tmp / python, "-m", "pip", "install", "-q", "--no-compile", f"tensorflow-cpu=={version}.*", "numpy<2"],
             what, timeout=1800)

    return Runtime(_build_once(venv, build, what) / python)


def _python39_runtime(version):
    what = f"Python 3.9 with TensorFlow {version}"
    if sys.platform != "linux" or platform.machine() != "x86_64":
        pytest.skip(f"{what}: recipe for Debian on x86_64 only, this is {sys.platform} {platform.machine()}")
    root = _build_once(cache_folder() / "python3.9-bullseye", _unpack_python39, "Python 3.9 from Debian 11")
    python = root / "usr/bin/python3.9"
    env = {"LD_LIBRARY_PATH": str(root / "usr/lib/x86_64-linux-gnu"), "PYTHONNOUSERSITE": "1"}

    def install(tmp):
        # --no-compile: this Python's byte code is of no use to Python 3.9, and compiling costs a third
        _run([sys.executable, "-m", "pip", "install", "-q", "--no-compile", "--target", tmp, "--python-version", "3.9",
              "--only-binary=:all:", "--implementation", "cp", f"tensorflow-cpu=={version}", *PYTHON39_PINS],
             what, timeout=1800)

    packages = _build_once(cache_folder() / f"tf{version}-py39", install, what)
    return Runtime(python, {**env, "PYTHONPATH": str(packages)})


def _unpack_python39(root):
    """Debian 11's Python 3.9 unpacked into ``root`` (usr/bin/python3.9 and its libraries)."""
    what = "Python 3.9 from Debian 11"
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        pytest.skip(f"cannot make {what}: apt-get and dpkg are needed")
    state = root / "apt"
    (state / "lists" / "partial").mkdir(parents=True)
    (state / "cache").mkdir()
    (state / "debs").mkdir()
    (state / "sources.list").write_text(BULLSEYE_SOURCES)
    options = []
    for key, value in (("Dir::Etc::SourceList", state / "sources.list"), ("Dir::Etc::SourceParts", "/dev/null"),
                       ("Dir::State::Lists", state / "lists"), ("Dir::Cache", state / "cache")):
        options += ["-o", f"{key}={value}"]
    _run(["apt-get", *options, "update"], what, timeout=600)
    _run(["apt-get", *options, "download", *PYTHON39_PACKAGES], what, timeout=600, cwd=state / "debs")
    for deb in sorted((state / "debs").glob("*.deb")):
        _run(["dpkg", "-x", deb, root], what, timeout=300)
    shutil.rmtree(state)
    _run([root / "usr/bin/python3.9", "-c", "import distutils, ssl, ctypes, decimal"], what, timeout=60,
         env={**os.environ, "LD_LIBRARY_PATH": str(root / "usr/lib/x86_64-linux-gnu")})


# Run in a separate Python: loads SavedModels with TensorFlow (and Keras' TFSMLayer) only, applies
# the jobs listed in the JSON file argv[1], writes their outputs, and reports what it imported.
LOADER = r"""
import json, sys
import numpy as np
import tensorflow as tf

jobs = json.load(open(sys.argv[1]))
report = {"tensorflow": tf.__version__, "signatures": {}}
for job in jobs:
    image = np.load(job["input"])
    if job["how"] == "eager":
        loaded = tf.saved_model.load(job["model"])
        function = loaded.signatures[job["signature"]]
        report["signatures"][job["model"]] = sorted(loaded.signatures)
        report["keys"] = [sorted(function.structured_input_signature[1]), sorted(function.structured_outputs)]
        out = function(input=tf.constant(image))["output"].numpy()
    elif job["how"] == "tfsm":  # what bioimageio.core does
        import keras
        out = keras.layers.TFSMLayer(job["model"], call_endpoint="serve")(tf.constant(image))
        out = np.asarray(out["output"])
    else:  # "session": graph mode by signature tensor names, as TensorFlow Java loads a SavedModel
        with tf.Graph().as_default(), tf.compat.v1.Session() as session:
            meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], job["model"])
            signature = meta.signature_def[job["signature"]]
            out = session.run(signature.outputs["output"].name, {signature.inputs["input"].name: image})
    np.save(job["output"], out)
report["pn2v_tf_imported"] = sorted(m for m in sys.modules if m.split(".")[0] == "pn2v_tf")
json.dump(report, open(sys.argv[2], "w"))
"""


def run_saved_models(runtime, jobs, folder):
    """Run LOADER's ``jobs`` in ``runtime`` (a :class:`Runtime`, or None for this Python without
    PYTHONPATH) in ``folder``.

    Each job is a dict: ``model`` (SavedModel folder), ``input`` (.npy file), ``signature``, ``how``
    ('eager', 'tfsm' or 'session'); ``output`` (.npy file) defaults to ``folder/out<i>.npy``.
    Returns (outputs as arrays, LOADER's report); raises RuntimeError with the end of stderr if the
    run fails.
    """
    folder = Path(folder)
    for index, job in enumerate(jobs):
        job.setdefault("output", str(folder / f"out{index}.npy"))
    (folder / "jobs.json").write_text(json.dumps(jobs))
    command = runtime.command if runtime else [sys.executable]
    env = runtime.env if runtime else {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run([*command, "-c", LOADER, str(folder / "jobs.json"), str(folder / "report.json")],
                            cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"loading the SavedModels failed:\n{result.stderr[-3000:]}")
    return [np.load(job["output"]) for job in jobs], json.loads((folder / "report.json").read_text())
