"""The example script runs the README's TIFF workflow end to end."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import tifffile

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "pn2v_from_tiffs.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("pn2v_from_tiffs", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiff_workflow_writes_a_denoised_image_of_the_input_shape(example, tmp_path):
    data_dir, output = tmp_path / "data", tmp_path / "denoised.tif"
    denoised = example.main(["--make-example-data", str(data_dir), "--basedir", str(tmp_path / "models"),
                             "--epochs", "1", "--steps", "3", "--n-samples", "8", "--n-first", "8",
                             "--output", str(output)])
    written = tifffile.imread(output)
    noisy = tifffile.imread(data_dir / "noisy_image.tif")
    assert written.shape == noisy.shape and np.all(np.isfinite(written))
    np.testing.assert_array_equal(written, denoised)
    assert (tmp_path / "models" / "pn2v_example" / "noise_model.npz").exists()


def test_example_never_overwrites_existing_files(example, tmp_path):
    existing = tmp_path / "noisy_image.tif"
    tifffile.imwrite(existing, np.zeros((4, 4), np.float32))
    with pytest.raises(SystemExit, match="not overwriting"):
        example.write_example_data(tmp_path)
    np.testing.assert_array_equal(tifffile.imread(existing), 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["noisy_image.tif"]
