"""Tests of pn2v_tf.io: finding TIFFs, reading them with their axes, clear errors, atomic writing."""

import numpy as np
import pytest
import tifffile

from pn2v_tf.io import InputError, as_dtype, atomic_path, find_tiffs, read_image, stack_from_axes, write_tiff


def _image(shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).uniform(0, 200, shape).astype(dtype)


# -- finding -------------------------------------------------------------------------------------

def test_find_tiffs_takes_files_folders_and_patterns_in_order_without_repeats(tmp_path):
    for name in ("b.tif", "a.TIFF", "c.png", "d.tif"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "e.tif").write_bytes(b"x")
    found = find_tiffs([tmp_path, str(tmp_path / "sub" / "*.tif"), tmp_path / "b.tif"])
    assert [p.name for p in found] == ["a.TIFF", "b.tif", "d.tif", "e.tif"]


@pytest.mark.parametrize("make, problem", [
    (lambda d: d.mkdir(), "no TIFF files"),
    (lambda d: None, "no such file or folder"),
])
def test_find_tiffs_names_an_empty_or_missing_folder(tmp_path, make, problem):
    folder = tmp_path / "images"
    make(folder)
    with pytest.raises(InputError, match=problem) as info:
        find_tiffs([folder])
    assert info.value.path == str(folder)


def test_a_pattern_matching_nothing_is_an_error(tmp_path):
    with pytest.raises(InputError, match="no TIFF files match"):
        find_tiffs([str(tmp_path / "*.tif")])


# -- reading -------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape, kwargs, axes", [
    ((32, 40), {}, "YX"),
    ((3, 32, 40), {"photometric": "minisblack"}, "SYX"),
    ((3, 32, 40), {"imagej": True, "metadata": {"axes": "TYX"}}, "TYX"),
    ((3, 32, 40), {"imagej": True, "metadata": {"axes": "ZYX"}}, "ZYX"),
    ((3, 1, 32, 40), {"imagej": True, "metadata": {"axes": "TCYX"}}, "TYX"),
])
def test_axes_come_from_the_metadata(tmp_path, shape, kwargs, axes):
    data = _image(shape)
    tifffile.imwrite(tmp_path / "a.tif", data, **kwargs)
    image = read_image(tmp_path / "a.tif")
    assert image.axes == axes
    np.testing.assert_array_equal(image.data, data.reshape(image.data.shape))
    assert image.stack.dtype == np.float32 and image.stack.shape == (int(np.prod(shape[:-2])), 32, 40)


def test_given_axes_override_the_metadata_and_keep_the_dtype(tmp_path):
    data = _image((32, 40, 3), dtype=np.uint16)  # stored as RGB by tifffile
    tifffile.imwrite(tmp_path / "a.tif", data)
    image = read_image(tmp_path / "a.tif", axes="YXS")
    assert image.axes == "YXS" and image.data.dtype == np.uint16
    np.testing.assert_array_equal(image.stack, np.moveaxis(data, -1, 0))


@pytest.mark.parametrize("shape, kwargs, axes, problem", [
    ((32, 40, 3), {}, None, "3 channels"),                                  # RGB
    ((3, 32, 40), {"photometric": "minisblack"}, "YX", "length 3"),         # axes of the wrong length
    ((32, 40), {}, "XX", "once"),
])
def test_wrong_axes_name_the_file(tmp_path, shape, kwargs, axes, problem):
    tifffile.imwrite(tmp_path / "a.tif", _image(shape, dtype=np.uint8), **kwargs)
    with pytest.raises(InputError, match=problem) as info:
        read_image(tmp_path / "a.tif", axes)
    assert str(info.value).startswith(f"{tmp_path / 'a.tif'}: ")


def test_a_time_series_of_volumes_reads_as_slices_or_as_volumes(tmp_path):
    data = _image((2, 3, 32, 40))
    tifffile.imwrite(tmp_path / "a.tif", data, imagej=True, metadata={"axes": "TZYX"})
    slices, volumes = read_image(tmp_path / "a.tif"), read_image(tmp_path / "a.tif", n_dim=3)
    assert slices.axes == volumes.axes == "TZYX"
    np.testing.assert_array_equal(slices.stack, data.reshape(6, 32, 40))
    np.testing.assert_array_equal(volumes.stack, data)
    assert read_image(tmp_path / "a.tif", n_dim=None).stack.shape == (2, 3, 32, 40)  # Z present: volumes


def test_a_3d_model_needs_the_z_axis(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", _image((3, 32, 40)), photometric="minisblack")
    with pytest.raises(InputError, match="include ZYX .* name the image's Z axis"):
        read_image(tmp_path / "a.tif", n_dim=3)
    assert read_image(tmp_path / "a.tif", "ZYX", n_dim=3).stack.shape == (1, 3, 32, 40)


def test_unreadable_corrupt_and_truncated_files_are_input_errors(tmp_path):
    (tmp_path / "text.tif").write_text("not an image")
    (tmp_path / "corrupt.tif").write_bytes(b"II*\x00" + b"\xff" * 40)
    tifffile.imwrite(tmp_path / "whole.tif", _image((4, 64, 64)), imagej=True, metadata={"axes": "ZYX"})
    data = (tmp_path / "whole.tif").read_bytes()
    (tmp_path / "truncated.tif").write_bytes(data[: len(data) // 2])
    for name, problem in (("text.tif", "cannot read"), ("corrupt.tif", "corrupt|cannot read"),
                          ("truncated.tif", "corrupt|cannot read")):
        with pytest.raises(InputError, match=problem):
            read_image(tmp_path / name)
    assert read_image(tmp_path / "whole.tif").stack.shape == (4, 64, 64)


def test_nan_and_inf_pixels_are_counted(tmp_path):
    data = _image((2, 16, 16))
    data[0, 1, 2], data[1, 3, 4] = np.nan, np.inf
    tifffile.imwrite(tmp_path / "a.tif", data, photometric="minisblack")
    with pytest.raises(InputError, match=r"NaN or infinite values \(2\)"):
        read_image(tmp_path / "a.tif")


def test_stack_from_axes_restores_the_layout():
    img = _image((16, 3, 24))
    stack, restore = stack_from_axes(img, "YTX")
    assert stack.shape == (3, 16, 24)
    np.testing.assert_array_equal(restore(stack[..., None])[..., 0], img)


# -- writing -------------------------------------------------------------------------------------

@pytest.mark.parametrize("axes, shape, imagej_axes", [
    ("YX", (16, 24), "YX"), ("SYX", (3, 16, 24), "ZYX"), ("TYX", (3, 16, 24), "TYX"),
    ("YXT", (16, 24, 3), "TYX"), ("CSYX", (2, 3, 16, 24), "ZCYX"),
])
def test_written_tiffs_are_imagej_hyperstacks(tmp_path, axes, shape, imagej_axes):
    data = _image(shape)
    write_tiff(tmp_path / "a.tif", data, axes)
    with tifffile.TiffFile(tmp_path / "a.tif") as tif:
        assert tif.is_imagej and tif.series[0].axes == imagej_axes
        order = [axes.replace("S", "Z").index(a) for a in imagej_axes]
        np.testing.assert_array_equal(tif.series[0].asarray(), np.transpose(data, order))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif"]


def test_write_refuses_an_existing_file_and_other_dtypes(tmp_path):
    write_tiff(tmp_path / "a.tif", np.zeros((8, 8), np.float32), "YX")
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_tiff(tmp_path / "a.tif", np.ones((8, 8), np.float32), "YX")
    write_tiff(tmp_path / "a.tif", np.ones((8, 8), np.float32), "YX", overwrite=True)
    assert tifffile.imread(tmp_path / "a.tif")[0, 0] == 1
    with pytest.raises(ValueError, match="float64"):
        write_tiff(tmp_path / "b.tif", np.ones((8, 8)), "YX")


def test_an_interrupted_write_leaves_neither_the_file_nor_the_temporary(tmp_path):
    target = tmp_path / "a.tif"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_as_dtype_rounds_and_clips_integers():
    values = np.array([-3.2, 0.4, 0.6, 254.5, 300.0], np.float32)
    out, clipped = as_dtype(values, "uint8")
    assert out.dtype == np.uint8 and out.tolist() == [0, 0, 1, 254, 255] and clipped == 2
    out, clipped = as_dtype(values, "float32")
    assert out.dtype == np.float32 and clipped == 0
    with pytest.raises(ValueError):
        as_dtype(values, "int32")
