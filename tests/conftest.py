"""The tiny networks of the tests in one place: the shared base settings, on top of which each test
file states its own values (batch size, learning rate, seed, ...) explicitly.

Plain dicts rather than fixtures, imported by name (``from conftest import TINY_NET, tiny``): pytest
puts this folder, which has no ``__init__.py``, on ``sys.path`` and registers this file as the module
``conftest``. Module-scoped fixtures and plain test bodies use the dicts alike, and each file keeps
its ``TINY`` name, so that a test's lines read as before.
"""

#: PN2VConfig keywords of the tiny 2-D network: a U-Net of depth 2 with 8 feature channels in its first
#: level, trained on 32x32 patches, without TensorBoard logs.
TINY_NET = dict(unet_n_depth=2, unet_n_first=8, n2v_patch_shape=(32, 32), train_tensorboard=False)

#: Smaller still, for 32x32 images: 4 first-level channels, 16x16 patches, batches of 4 and 4
#: validation patches, seed 0.
SMALL_NET = dict(TINY_NET, unet_n_first=4, n2v_patch_shape=(16, 16), train_batch_size=4, train_n_val_patches=4,
                 seed=0)

#: The tiny 3-D network: axes ZYX, depth 2, 4 feature channels, no pooling along Z, 8x16x16 patches.
TINY_3D = dict(axes="ZYX", unet_n_depth=2, unet_n_first=4, unet_pool=(1, 2, 2), n2v_patch_shape=(8, 16, 16),
               train_batch_size=2, train_n_val_patches=2, train_tensorboard=False, seed=0)

#: PN2VConfig keywords that ``pn2v train`` has no option for: left out of its command line.
_NOT_ON_THE_COMMAND_LINE = ("train_tensorboard",)


def tiny(base=TINY_NET, **overrides):
    """A new dict: ``base`` (``TINY_NET`` or ``SMALL_NET``) with ``overrides``."""
    return {**base, **overrides}


def train_options(config):
    """The ``pn2v train`` options (a list of strings) of PN2VConfig keywords, by the command line's own
    mapping ``cli.CONFIG_OPTIONS``; a patch shape of equal sides is given as one side."""
    from pn2v_tf.cli import CONFIG_OPTIONS

    argv = []
    for attribute, value in config.items():
        if attribute in _NOT_ON_THE_COMMAND_LINE:
            continue
        values = list(value) if isinstance(value, (tuple, list)) else [value]
        if len(set(values)) == 1:
            values = values[:1]
        argv += [f"--{CONFIG_OPTIONS[attribute].replace('_', '-')}", *map(str, values)]
    return argv


def run(argv, capsys):
    """``pn2v`` with ``argv`` (``cli.main``) -> (exit code, stdout, stderr)."""
    import warnings

    from pn2v_tf import cli

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err, command):
    """The one error line of a failed run (other lines may be warnings)."""
    lines = [line for line in err.splitlines() if line.startswith(f"pn2v {command}: error: ")]
    assert len(lines) == 1, err
    return lines[0]


def noisy(rng, shape):
    """Poisson images of a random brightness between 20 and 90 photons per pixel, float32."""
    import numpy as np

    return rng.poisson(rng.uniform(20, 90, shape)).astype(np.float32)


def small_histogram():
    """A 32-bin histogram noise model of Poisson calibration data (signal 5 to 110), for tiny PN2V models."""
    import numpy as np

    from pn2v_tf import HistogramNoiseModel

    rng = np.random.default_rng(1)
    signal = rng.uniform(5, 110, (1, 40, 40)).astype(np.float32)
    return HistogramNoiseModel.from_calibration_stack(rng.poisson(np.repeat(signal, 30, axis=0)).astype(np.float32),
                                                      bins=32)
