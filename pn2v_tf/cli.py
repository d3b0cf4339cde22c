"""The ``pn2v`` command: noise models, training, prediction, export and evaluation on TIFF files.

``pn2v --help`` lists the subcommands, ``pn2v <subcommand> --help`` their options. TensorFlow is
imported only inside the subcommands that need it, so the help comes at once.

Exit codes: 0 done; 2 a problem with the input or the command line (the message names the file
and the problem; nothing was written); 1 training diverged (the loss became NaN or infinite);
130 or 143 interrupted by Ctrl-C or SIGTERM (a training keeps its last completed epoch and goes
on with ``--resume``). Set the environment variable ``PN2V_DEBUG=1`` to see the traceback of an
error instead of its one-line message, and TensorFlow's own log messages, which the command
otherwise keeps off stderr (and its progress bars).
"""

import argparse
import os
import signal
import sys
import tempfile
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path

from ._checks import DTYPE_POLICIES
from .io import IMAGEJ_DTYPES, InputError, channels_text, find_tiffs, read_image

#: pn2v_tf.masking.MANIPULATORS, without importing NumPy
MANIPULATOR_CHOICES = ("uniform_withoutCP", "median", "uniform_withCP", "normal_withoutCP", "mean", "normal_additive",
                       "normal_fitted", "identity")

EXIT_INPUT = 2
EXIT_DIVERGED = 1
#: Defaults of the training options; the same as :class:`PN2VConfig`'s (the seed excepted).
#: ``patch_size`` and ``unet_pool`` of ``None`` are the configuration's defaults for the images' dimensions.
TRAINING_DEFAULTS = dict(epochs=200, steps_per_epoch=100, batch_size=16, patch_size=None, n_samples=800,
                         unet_depth=3, unet_n_first=64, unet_pool=None, learning_rate=4e-4, seed=0,
                         single_net_per_channel=True, n2v2=False, blurpool=False, skip_skipone=False,
                         manipulator=None, struct_mask=None, dtype_policy="float32")
#: PN2VConfig attribute -> training option.
CONFIG_OPTIONS = dict(n_samples="n_samples", unet_n_depth="unet_depth", unet_n_first="unet_n_first",
                      unet_pool="unet_pool", n2v_patch_shape="patch_size", train_epochs="epochs",
                      train_steps_per_epoch="steps_per_epoch", train_batch_size="batch_size",
                      train_learning_rate="learning_rate", seed="seed", unet_dtype_policy="dtype_policy")
#: Options a resumed training takes from its model instead.
_FIXED_ON_RESUME = ("mode", "noise_model", "batch_size", "patch_size", "n_samples", "unet_depth",
                    "unet_n_first", "unet_pool", "learning_rate", "seed", "single_net_per_channel", "n2v2",
                    "blurpool", "skip_skipone", "manipulator", "struct_mask", "dtype_policy")
#: Options a resumed training may change; without them it uses the interrupted run's.
_RUN_SETTINGS = ("inputs", "axes", "validation", "validation_fraction", "epochs", "steps_per_epoch",
                 "allow_out_of_range")

EXIT_CODES = """exit codes: 0 done; 2 bad input or command line (nothing written); 1 training diverged;
130/143 interrupted by Ctrl-C/SIGTERM (pn2v train --resume continues)"""


class UsageError(ValueError):
    """Options that do not go together."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM, with what was kept."""


# -- the parser ----------------------------------------------------------------------------------

class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Adds '(default: ...)' to every option whose help does not mention its default."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or not action.option_strings or any(action.default is v for v in (None, False,
                                                                                             argparse.SUPPRESS)):
            return text
        return text + " (default: %(default)s)"


def build_parser():
    parser = argparse.ArgumentParser(
        prog="pn2v", formatter_class=_Formatter, epilog=EXIT_CODES,
        description="Probabilistic Noise2Void denoising of microscopy images stored as TIFF files.")
    from .version import __version__
    parser.add_argument("--version", action="version", version=f"pn2v_tf {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="SUBCOMMAND")
    for add in (_add_noise_model, _add_train, _add_predict, _add_export, _add_evaluate):
        add(commands)
    return parser


def _subparser(commands, name, summary, example, run, tensorflow=True):
    """A subcommand's parser; ``tensorflow``: whether its run imports TensorFlow (quietly, see :func:`main`)."""
    parser = commands.add_parser(name, help=summary, description=summary, formatter_class=_Formatter,
                                 epilog=f"example:\n  {example}\n\n{EXIT_CODES}")
    parser.set_defaults(run=run, needs_tensorflow=tensorflow)
    return parser


def _add_common(parser, quiet=True, overwrite=True):
    parser.add_argument("--axes", help="axes of the input TIFFs: YX or ZYX, after S (stack) or T (time) if any, "
                                       "and C for channels (e.g. SYXC, CYX, ZCYX); pn2v train makes a 3-D model of "
                                       "data with a Z axis (give SYX to train 2-D on slices), a 2-D model denoises Z "
                                       "slice by slice, and a multichannel model of data with C (default: from the "
                                       "files' metadata: a plain 3-D stack is SYX, an ImageJ hyperstack's channels "
                                       "are C; RGB samples need --axes)")
    if overwrite:
        parser.add_argument("--overwrite", action="store_true", help="replace existing outputs (off: refuse)")
    if quiet:
        parser.add_argument("--quiet", action="store_true", help="no progress bars and no summary lines")


def _add_training_options(parser, on_resume, n_samples=True, title="training", description=None):
    """The training options, in an argument group ``title`` (with ``description``); returns the group."""
    note = "; with --resume: the interrupted run's" if on_resume else ""
    fixed = "; with --resume: the model's" if on_resume else ""
    unless_given = " if --validation is not given" if on_resume else ""  # pn2v train has --validation
    d = TRAINING_DEFAULTS
    group = parser.add_argument_group(title, description)
    group.add_argument("--epochs", type=int, help=f"number of epochs in all (default: {d['epochs']}{note})")
    group.add_argument("--steps-per-epoch", type=int,
                       help=f"training steps per epoch (default: {d['steps_per_epoch']}{note})")
    group.add_argument("--validation-fraction", type=float,
                       help=f"share of the images held out for validation{unless_given}; one image is split by "
                            f"rows (default: 0.1{note})")
    group.add_argument("--batch-size", type=int, help=f"patches per step (default: {d['batch_size']}{fixed})")
    group.add_argument("--patch-size", type=int, nargs="+", metavar="SIDE",
                       help="training patch: one side for all axes, or one per axis (Y X, or Z Y X), each a "
                            f"multiple of unet-pool**(unet-depth - 1) (default: 64 64, or 16 64 64 in 3-D{fixed})")
    if n_samples:
        group.add_argument("--n-samples", type=int,
                           help=f"prior samples K the network predicts per pixel (default: {d['n_samples']}{fixed})")
    group.add_argument("--unet-depth", type=int, help=f"U-Net resolution levels (default: {d['unet_depth']}{fixed})")
    group.add_argument("--unet-n-first", type=int,
                       help=f"feature channels of the U-Net's first level (default: {d['unet_n_first']}{fixed})")
    group.add_argument("--unet-pool", type=int, nargs="+", metavar="FACTOR",
                       help="pooling factor of the U-Net: one for all axes, or one per axis; e.g. 1 2 2 keeps "
                            f"the z resolution of thin or anisotropic stacks (default: 2{fixed})")
    group.add_argument("--learning-rate", type=float, help=f"Adam learning rate (default: {d['learning_rate']}{fixed})")
    group.add_argument("--seed", type=int,
                       help=f"seed of the initial weights, patches and masks (default: {d['seed']}{fixed})")
    group.add_argument("--single-net-per-channel", action=argparse.BooleanOptionalAction, default=None,
                       help="multichannel images: an independent U-Net per channel, C times the cost of one "
                            "(default); --no-single-net-per-channel: one U-Net sees all channels and predicts each "
                            f"one's samples, at little more than one channel's cost{fixed}")
    group.add_argument("--n2v2", action="store_true", default=None,
                       help="N2V2 against checkerboard artefacts: --blurpool, --skip-skipone and --manipulator "
                            f"median together{fixed}")
    group.add_argument("--blurpool", action="store_true", default=None,
                       help=f"N2V2's max-blur pooling instead of max pooling (off{fixed})")
    group.add_argument("--skip-skipone", action="store_true", default=None,
                       help=f"N2V2: no skip connection at the U-Net's top level (off{fixed})")
    group.add_argument("--dtype-policy", choices=DTYPE_POLICIES,
                       help="the U-Net body's Keras dtype policy: mixed_bfloat16 computes it in bfloat16, faster on "
                            "GPUs and on CPUs with bfloat16 units (e.g. Intel AMX); head, noise model and loss stay "
                            f"float32 (default: float32{fixed})")
    group.add_argument("--manipulator", choices=MANIPULATOR_CHOICES,
                       help="replacement of a blind spot: a random neighbour (uniform_withoutCP), the median of "
                            "its neighbours (median, N2V2) or one of n2v's other variants (default: "
                            f"uniform_withoutCP{fixed})")
    group.add_argument("--struct-mask", metavar="JSON",
                       help="structN2V against noise correlated along rows or columns: a structuring element "
                            "centred on each blind spot as a JSON nested list of 0 and 1 with odd sides, e.g. "
                            "'[[1,1,1,1,1,1,1]]' hides 3 pixels left and right (correlation along X); the pixels "
                            f"marked 1 are hidden from the network (default: none{fixed})")
    return group


def _add_noise_model(commands):
    parser = _subparser(commands, "noise-model", "Build a noise model p(x|s) and write it with a PNG plot of it.",
                        "pn2v noise-model --calibration calibration.tif -o noise_model.npz", _noise_model)
    data = parser.add_argument_group("data (give one of --calibration, --signal and --bootstrap)")
    source = data.add_mutually_exclusive_group(required=True)
    source.add_argument("--calibration", nargs="+", metavar="TIFF",
                        help="calibration stacks: many noisy frames of a static sample, the signal is their mean "
                             "(files, folders or patterns; a folder of single frames is one stack); the frames of "
                             "a multichannel stack (e.g. TCYX) give one model per channel")
    source.add_argument("--signal", nargs="+", metavar="TIFF",
                        help="clean images, paired in sorted order with --observation")
    source.add_argument("--bootstrap", nargs="+", metavar="TIFF",
                        help="noisy images only: an N2V model is trained on them (options under 'training' below) "
                             "and its predictions are the signal (Prakash et al. 2020)")
    data.add_argument("--observation", nargs="+", metavar="TIFF",
                      help="--signal only, and required with it: noisy images, each with the shape of its clean "
                           "image or n such frames")
    parser.add_argument("-o", "--output", required=True,
                        help="noise model file to write (.npz is appended if missing); multichannel data (axis C) "
                             "get one model per channel, all in this one file")
    parser.add_argument("--plot", help="PNG plot of the model against the data, <plot>_c<channel>.png per channel "
                                       "of multichannel data (default: the output with .png)")
    parser.add_argument("--kind", choices=("histogram", "gmm"), default="histogram",
                        help="histogram (the PN2V paper's) or gmm (Gaussian mixture)")
    histogram = parser.add_argument_group("histogram (--kind histogram, any data source)")
    histogram.add_argument("--bins", type=int, default=256,
                           help="bins along signal and observation; integer data (8- or 16-bit) get at most one bin "
                                "per value they can take")
    histogram.add_argument("--value-range", nargs=2, type=float, metavar=("LOW", "HIGH"),
                           help="range of signal and observation; make it wide enough for all images you will train "
                                "on and denoise (default: the data's minimum to maximum; for integer data (min - "
                                "0.5) to (max + 0.5), with bin edges halfway between the values they take (the "
                                "integers, or multiples of a common step, e.g. 16 for 12-bit data in 16-bit pixels) "
                                "and the same number of these values in every bin)")
    gmm = parser.add_argument_group("gmm (--kind gmm, any data source)")
    gmm.add_argument("--n-gaussians", type=int, default=3, help="mixture components")
    gmm.add_argument("--n-coeff", type=int, default=2, help="coefficients per polynomial (2: linear in s)")
    gmm.add_argument("--gmm-steps", type=int, default=1000, help="Adam steps of the fit (its seed is --seed)")
    gmm.add_argument("--saturation", nargs=2, type=float, metavar=("LOW", "HIGH"),
                     help="the camera's saturation values, treated as censored (default: none)")
    _add_common(parser)
    training = _add_training_options(
        parser, on_resume=False, n_samples=False, title="training (--bootstrap only)",
        description="the N2V model that --bootstrap trains on its images and keeps as a model folder (a\n"
                    "denoiser in its own right: pn2v predict --model); refused with --calibration and\n"
                    "--signal, except --seed, which also seeds a gmm fit")
    training.add_argument("--n2v-model", metavar="MODEL_DIR",
                          help="model folder for the N2V model (default: the output's name with _n2v, e.g. "
                               "noise_model_n2v for -o noise_model.npz)")


def _add_train(commands):
    parser = _subparser(commands, "train", "Train a PN2V (or N2V) model on noisy TIFFs into a CSBDeep model folder.",
                        "pn2v train noisy/ --noise-model noise_model.npz --model models/my_pn2v", _train)
    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="noisy training TIFFs: files, folders or glob patterns, all images of one size "
                             "and one number of channels (default with --resume: the interrupted run's)")
    parser.add_argument("--model", required=True, metavar="MODEL_DIR",
                        help="model folder to write (config.json, noise_model.npz, weights_*.h5, "
                             "training_state.npz, training_log.csv)")
    parser.add_argument("--noise-model", nargs="+", action="extend", metavar="NPZ",
                        help="noise model file (from pn2v noise-model); needed for --mode pn2v. Multichannel "
                             "images take one file per channel in channel order (repeat the option or give several "
                             "paths), one multichannel file, or one single-channel file that is then applied to "
                             "every channel (default: none)")
    parser.add_argument("--mode", choices=("pn2v", "n2v"),
                        help="pn2v, or n2v (Noise2Void, no noise model) (default: pn2v)")
    parser.add_argument("--validation", nargs="+", metavar="TIFF",
                        help="validation TIFFs (default: --validation-fraction of the inputs)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the interrupted training in --model from its last completed epoch "
                             "(weights, optimiser state, epoch count)")
    _add_range_option(parser, "train on")
    _add_common(parser)
    _add_training_options(parser, on_resume=True)


def _add_range_option(parser, verb):
    parser.add_argument("--allow-out-of-range", action="store_true",
                        help=f"{verb} pixels far outside the noise model's range (off: pixels more than "
                             f"{RANGE_ERROR_MARGIN * 100:g}%% of its width beyond it are refused; closer ones give a "
                             "warning)")


def _add_predict(commands):
    parser = _subparser(commands, "predict", "Denoise TIFFs into an output folder (same file names, ImageJ TIFFs), "
                        "and zarr / OME-Zarr arrays (or TIFFs with --zarr) chunk by chunk into zarr arrays.",
                        "pn2v predict --model models/my_pn2v noisy/ -o denoised/\n"
                        "  pn2v predict --model models/my_pn2v stack.zarr -o denoised/", _predict)
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="noisy TIFFs (files, folders or glob patterns) or zarr arrays / OME-Zarr images (their "
                             "folders); a zarr input is read block by block and written to OUTPUT_DIR/<name>.zarr "
                             "with its shape and chunks (float32; OME-Zarr with its multiscale metadata, lower "
                             "resolutions averaged from the denoised full resolution), and a run started again "
                             "skips the chunks that are complete")
    parser.add_argument("--zarr", action="store_true",
                        help="also TIFFs chunk by chunk into OUTPUT_DIR/<name>.zarr, read through tifffile's zarr "
                             "interface (for TIFFs larger than memory)")
    parser.add_argument("--scheduler", default="threads", metavar="SCHEDULER",
                        help="Dask scheduler of zarr predictions: threads, synchronous, or the address of a "
                             "dask.distributed scheduler (e.g. tcp://10.0.0.1:8786), whose workers load the model "
                             "folder and read the input and output paths themselves")
    parser.add_argument("--model", required=True, metavar="MODEL",
                        help="model folder (from pn2v train), or a bioimage.io package made by pn2v_tf (.zip, "
                             "or its unpacked folder), which runs through its SavedModel")
    parser.add_argument("-o", "--output", required=True, metavar="OUTPUT_DIR",
                        help="folder for the results, created if missing; results of multichannel images keep "
                             "their channels (ImageJ axis C)")
    parser.add_argument("--estimator", choices=("mmse", "prior_mean", "posterior"), default="mmse",
                        help="mmse (uses each pixel's noisy value and the noise model), prior_mean (mean of "
                             "the K samples), or posterior (--n-posterior samples of the clean image, written "
                             "as ImageJ channels, or as frames T (else slices Z) of a multichannel image; needs a "
                             "model folder)")
    parser.add_argument("--tta", action="store_true",
                        help="test-time augmentation: the average of the predictions under the 8 rotations and "
                             "flips in YX (never into Z); costs about 8 times as long (model folders only)")
    parser.add_argument("--dtype-policy", choices=DTYPE_POLICIES,
                        help="the U-Net body's dtype policy for this prediction (mixed_bfloat16: faster on GPUs and "
                             "CPUs with bfloat16 units, results within about 1e-3 of float32's; model folders only) "
                             "(default: the model's)")
    parser.add_argument("--n-posterior", type=int, default=10, help="samples per image with --estimator posterior")
    parser.add_argument("--seed", type=int, default=0, help="seed of the posterior samples")
    parser.add_argument("--n-tiles", nargs="+", type=int, metavar="N",
                        help="tiles along Y X (NZ NY NX for a 3-D model) (default: as few as keep a tile's K samples "
                             "below 2**26 values; a package's graph bounds its memory itself)")
    parser.add_argument("--dtype", choices=IMAGEJ_DTYPES + ("same",), default="float32",
                        help="pixel type of the results; integer types are rounded and clipped, 'same' is "
                             "the input's type")
    _add_range_option(parser, "denoise")
    _add_common(parser)


def _add_export(commands):
    parser = _subparser(commands, "export", "Export a model as a TensorFlow SavedModel or a bioimage.io package.",
                        "pn2v export --model models/my_pn2v -o my_pn2v.zip --test-input noisy/image1.tif",
                        _export)
    parser.add_argument("--model", required=True, metavar="MODEL_DIR", help="model folder (from pn2v train)")
    parser.add_argument("-o", "--output", required=True,
                        help="SavedModel folder, or the package's .zip file for bioimageio")
    parser.add_argument("--format", choices=("auto", "savedmodel", "bioimageio"), default="auto",
                        help="auto: bioimageio for an output ending in .zip, savedmodel otherwise")
    parser.add_argument("--test-input", metavar="TIFF",
                        help="bioimageio: a raw noisy image for the package's test and cover (its first "
                             "image if a stack) (default: the crop of a validation image that training kept in "
                             "the model folder, example_input.tif)")
    parser.add_argument("--name", help="bioimageio: model name (default: from the model folder)")
    parser.add_argument("--description", help="bioimageio: one-line description (default: says estimator and "
                                              "noise model)")
    parser.add_argument("--author", action="append", default=[], metavar="NAME",
                        help="bioimageio: an author's name; repeat for several (default: none)")
    parser.add_argument("--license", default="CC-BY-4.0", help="bioimageio: SPDX license of the weights")
    parser.add_argument("--xla", action="store_true",
                        help="savedmodel: compile the K samples' head and estimator with XLA, about twice as fast "
                             "on a CPU in TensorFlow for Python; TensorFlow Java on a GPU cannot run it (default: "
                             "without XLA; bioimage.io packages always are)")
    _add_common(parser, quiet=False)


def _add_evaluate(commands):
    parser = _subparser(commands, "evaluate", "PSNR of denoised TIFFs against ground-truth TIFFs, as a table.",
                        "pn2v evaluate denoised/ --ground-truth clean/", _evaluate, tensorflow=False)
    parser.add_argument("predictions", nargs="+", metavar="PREDICTION",
                        help="denoised TIFFs: files, folders or glob patterns")
    parser.add_argument("-g", "--ground-truth", nargs="+", required=True, metavar="TIFF",
                        help="ground-truth TIFFs, matched to the predictions by file name (a single pair "
                             "regardless of names)")
    parser.add_argument("--data-range", type=float,
                        help="peak range of the PSNR (default: each ground-truth image's max - min)")
    parser.add_argument("--csv", help="also write the table to this CSV file (default: none)")
    _add_common(parser, quiet=False)


# -- main ----------------------------------------------------------------------------------------

def main(argv=None):
    """Run ``pn2v`` with ``argv`` (default: the command line); returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_INPUT
    prefix = f"pn2v {args.command}"
    with _signals_interrupt() as received, _one_line_warnings(prefix):
        try:
            if args.needs_tensorflow:
                _quiet_tensorflow()
            return args.run(args) or 0
        except (ValueError, FileExistsError, FileNotFoundError, ImportError) as error:
            return _fail(prefix, "error", error, EXIT_INPUT)
        except FloatingPointError as error:
            return _fail(prefix, "error", error, EXIT_DIVERGED)
        except (KeyboardInterrupt, Interrupted) as error:
            return _fail(prefix, "interrupted", error, 128 + received.get("signal", signal.SIGINT))


def _fail(prefix, what, error, code):
    if os.environ.get("PN2V_DEBUG"):
        raise error
    message = " ".join(str(error).split())
    print(f"{prefix}: {what}" + (f": {message}" if message else ""), file=sys.stderr)
    return code


#: What TensorFlow's C++ core writes to stderr while it is imported, whatever TF_CPP_MIN_LOG_LEVEL says
#: (TensorFlow 2.21 logs the oneDNN line before it reads the variable): parts of the lines that
#: :func:`_import_tensorflow_quietly` keeps from the user.
TENSORFLOW_STARTUP_LINES = ("All log messages before absl::InitializeLog() is called",
                            "oneDNN custom operations are on", "This TensorFlow binary is optimized",
                            "To enable the following instructions")


def _quiet_tensorflow():
    """Keep TensorFlow's messages from the terminal, where they break the progress bars: C++ logs below
    errors off (``TF_CPP_MIN_LOG_LEVEL=3`` unless the user set it), the start-up lines filtered, and the
    Python loggers (retracing warnings) at ERROR. Nothing is hidden with ``PN2V_DEBUG`` set."""
    if os.environ.get("PN2V_DEBUG"):
        return
    from . import TF_LOG_LEVEL_GIVEN

    if not TF_LOG_LEVEL_GIVEN:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    _import_tensorflow_quietly()
    import logging

    from absl import logging as absl_logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # tf.get_logger(): "... triggered tf.function retracing"
    absl_logging.set_verbosity(absl_logging.ERROR)


def _import_tensorflow_quietly():
    """Import TensorFlow and Keras with file descriptor 2 (stderr, where C++ writes) captured; what was
    written there, except the lines of :data:`TENSORFLOW_STARTUP_LINES`, then goes to ``sys.stderr``."""
    from . import require_tensorflow

    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to capture
        saved = None
    with tempfile.TemporaryFile() as captured:
        if saved is not None:
            os.dup2(captured.fileno(), 2)
        try:
            require_tensorflow()
            import keras  # noqa: F401
        finally:
            if saved is not None:
                os.dup2(saved, 2)
                os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines
                                     if not any(part in line for part in TENSORFLOW_STARTUP_LINES)))


@contextmanager
def _signals_interrupt():
    """SIGTERM (and SIGINT) raise KeyboardInterrupt; yields a dict that records which came."""
    received = {}
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def interrupt(signum, frame):
        received["signal"] = signum
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield received
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextmanager
def _one_line_warnings(prefix):
    def show(message, category, filename, lineno, file=None, line=None):
        from tqdm import tqdm
        tqdm.write(f"{prefix}: warning: {' '.join(str(message).split())}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


# -- shared steps --------------------------------------------------------------------------------

def _model_folder(path):
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise InputError(folder, "not a model folder (no config.json); train one with pn2v train")
    return folder


def _is_package(path):
    """A bioimage.io package: a .zip file, or a folder with an rdf.yaml that is not a model folder."""
    path = Path(path)
    if (path / "config.json").is_file():
        return False
    return path.suffix == ".zip" or (path / "rdf.yaml").is_file()


def _load_package(path):
    from .packaged import load_bioimageio

    try:
        return load_bioimageio(path)
    except ValueError as error:
        raise InputError(path, str(error).removeprefix(f"{path}: ")) from None


def _load_model(folder):
    from .model import PN2V
    return PN2V(None, folder.name, basedir=str(folder.parent))


def _refuse_existing(path, overwrite):
    if Path(path).exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")


#: Pixels up to this fraction of the noise model's range beyond it only warn (noise tails a little
#: past the calibration's extremes); further out they are an input error.
RANGE_ERROR_MARGIN = 0.05


def _check_range(noise_model, image, allow):
    """Pixels far outside the noise model's range are an input error unless ``allow``; pixels outside
    it give one warning, naming the first file that has them (the model's own checks in training and
    prediction are then silenced: :func:`_ranges_checked`)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            noise_model.check_range(image.stack, "pixel", error_margin=None if allow else RANGE_ERROR_MARGIN)
        except ValueError as error:
            raise InputError(image.path, f"{error}; make the noise model from data that cover these values "
                                         "(pn2v noise-model --value-range), or pass --allow-out-of-range") from None
    for warning in caught:
        warnings.warn(f"{image.path}: {warning.message}", warning.category)


#: The noise model's warnings about the values of a model's training data or images (names as in
#: :mod:`pn2v_tf.model`), which :func:`_check_range` gave already, file by file.
_MODEL_RANGE_WARNING = r"(training data|validation data|image) values \[.*\] exceed the noise model's range"


@contextmanager
def _ranges_checked():
    """Training or prediction of inputs that :func:`_check_range` checked: no second range warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_MODEL_RANGE_WARNING)
        yield


def _read_images(inputs, axes, patch_shape=None, noise_model=None, allow_out_of_range=False, n_dim=2,
                 n_channels=1):
    """Read TIFFs of one image size and one number of channels as one float32 stack (N, *spatial),
    or (N, *spatial, C) for several channels; returns (stack, images).

    ``n_dim`` and ``n_channels`` as in :func:`pn2v_tf.io.read_image` (``None``: 3-D when the first
    file has a Z axis; the first file's channels).
    """
    import numpy as np

    files = find_tiffs(inputs)
    first = read_image(files[0], axes, n_dim, n_channels)
    n_dim = first.stack.ndim - 1 - (first.n_channels > 1)
    images = [first] + [read_image(path, axes, n_dim, n_channels=None) for path in files[1:]]
    _check_same_channels(images)
    for image in images:
        if _spatial_shape(image) != _spatial_shape(first):
            raise InputError(image.path, f"images of {_size(image)} pixels, unlike the {_size(first)} "
                                         f"of {first.path}; training needs images of one size")
        if patch_shape is not None and any(s < p for s, p in zip(_spatial_shape(image), patch_shape)):
            raise InputError(image.path, f"images of {_size(image)} pixels are smaller than the training "
                                         f"patch {'x'.join(str(p) for p in patch_shape)} (--patch-size)")
        if noise_model is not None:
            _check_range(noise_model, image, allow_out_of_range)
    return np.concatenate([image.stack for image in images]), images


def _spatial_shape(image):
    """The spatial sides of an :class:`~pn2v_tf.io.Image`'s images (its stack without N and C)."""
    return image.stack.shape[1:len(image.stack.shape) - (image.n_channels > 1)]


def _size(image):
    return "x".join(str(s) for s in _spatial_shape(image))


def _split_validation(X, images, fraction, patch_shape):
    """Hold out the last images (or the last rows of a single image) for validation."""
    from .data import split_validation

    if not 0 < fraction < 1:
        raise UsageError(f"--validation-fraction must be between 0 and 1, got {fraction}")
    try:
        return split_validation(X, fraction, min_rows=patch_shape[-2], n_channels=images[0].n_channels)
    except ValueError as error:
        raise InputError(images[0].path, f"{error} (--patch-size; or give --validation)") from None


def _settings(args, keys, defaults):
    """Option values of ``keys``, the ``defaults`` where an option was not given."""
    return {key: getattr(args, key) if getattr(args, key, None) is not None else defaults.get(key)
            for key in keys}


def _config(X, mode, settings, n_dim=2, n_channels=1):
    """A valid PN2VConfig of ``n_dim`` dimensions and ``n_channels`` channels (axes YXC or ZYXC when
    several; X's last axis) from the training settings; invalid values are named as options."""
    from .arrays import spatial_axes
    from .config import PN2VConfig

    kwargs = {attribute: settings[option] for attribute, option in CONFIG_OPTIONS.items()
              if settings.get(option) is not None}
    for attribute, option in (("n2v_patch_shape", "patch_size"), ("unet_pool", "unet_pool")):
        if settings.get(option) is not None:
            kwargs[attribute] = _per_axis(settings[option], n_dim, option)
    if settings.get("single_net_per_channel") is not None:
        kwargs["single_net_per_channel"] = bool(settings["single_net_per_channel"])
    kwargs.update(_n2v2_and_struct(settings, n_dim))
    if X is None and n_channels > 1:
        kwargs["n_channel_in"] = n_channels
    axes = spatial_axes(n_dim) + ("C" if n_channels > 1 else "")
    config = PN2VConfig(X, mode=mode, axes=axes, **kwargs)
    invalid = config.is_valid(return_invalid=True)[1]
    if invalid:
        options = [f"--{CONFIG_OPTIONS[name].replace('_', '-')} {_option_text(settings[CONFIG_OPTIONS[name]])}"
                   for name in invalid if name in CONFIG_OPTIONS and settings.get(CONFIG_OPTIONS[name]) is not None]
        options += [f"--{CONFIG_OPTIONS[name].replace('_', '-')} (default {_option_text(getattr(config, name))})"
                    for name in invalid if name in CONFIG_OPTIONS and settings.get(CONFIG_OPTIONS[name]) is None]
        raise UsageError(f"invalid option values: {', '.join(options or invalid)}"
                         + (f" (each patch side must be a multiple of the network's block {config.block_shape} "
                            "= unet-pool**(unet-depth - 1))" if "n2v_patch_shape" in invalid else ""))
    return config


def _n2v2_and_struct(settings, n_dim):
    """PN2VConfig keywords of --n2v2, --blurpool, --skip-skipone, --manipulator and --struct-mask."""
    import json

    from .masking import check_struct_mask

    n2v2 = bool(settings.get("n2v2"))
    kwargs = {key: True for key in ("blurpool", "skip_skipone") if n2v2 or settings.get(key)}
    if settings.get("manipulator") or n2v2:
        if n2v2 and settings.get("manipulator") not in (None, "median"):
            raise UsageError(f"--n2v2 replaces blind spots by the median; leave out --manipulator "
                             f"{settings['manipulator']}")
        kwargs["n2v_manipulator"] = settings.get("manipulator") or "median"
    if settings.get("struct_mask") is not None:
        try:
            mask = check_struct_mask(json.loads(settings["struct_mask"]), n_dim)
        except json.JSONDecodeError:
            raise UsageError(f"--struct-mask must be a JSON nested list, e.g. '[[1,1,1,1,1]]', got "
                             f"{settings['struct_mask']!r}") from None
        except ValueError as error:
            raise UsageError(f"--struct-mask: {error}") from None
        kwargs["structN2Vmask"] = mask.astype(int).tolist()
    return kwargs


def _per_axis(values, n_dim, option):
    """An option of one value for all axes, or one per axis, as a tuple of ``n_dim`` values."""
    values = [values] if isinstance(values, int) else list(values)
    if len(values) == 1:
        return tuple(values) * n_dim
    if len(values) != n_dim:
        raise UsageError(f"--{option.replace('_', '-')} takes 1 or {n_dim} values for {n_dim}-D images "
                         f"({'ZYX'[-n_dim:]}), got {len(values)}")
    return tuple(values)


def _option_text(value):
    return " ".join(str(v) for v in value) if isinstance(value, (tuple, list)) else str(value)


def _fit(model, X, X_val, settings, quiet, initial_epoch=0, checkpoint=None, description="training"):
    from .progress import TrainingProgress

    callbacks = [] if checkpoint is None else [checkpoint]
    callbacks.append(TrainingProgress(settings["epochs"], settings["steps_per_epoch"], initial_epoch, quiet,
                                      description))
    with _ranges_checked():
        return model.train(X, X_val, epochs=settings["epochs"], steps_per_epoch=settings["steps_per_epoch"],
                           initial_epoch=initial_epoch, callbacks=callbacks, verbose=0)


def _training_data(settings, noise_model, n_dim, n_channels=1):
    """Read the inputs (and validation files) of the training settings as ``n_dim``-D images of
    ``n_channels`` channels: (X, X_val)."""
    allow = settings.get("allow_out_of_range", False)
    patch_shape = _config(None, "n2v", settings, n_dim).n2v_patch_shape
    read = dict(patch_shape=patch_shape, noise_model=noise_model, allow_out_of_range=allow, n_dim=n_dim,
                n_channels=n_channels)
    X, images = _read_images(settings["inputs"], settings["axes"], **read)
    if settings.get("validation"):
        X_val, _ = _read_images(settings["validation"], settings["axes"], **read)
        return X, X_val
    return _split_validation(X, images, settings["validation_fraction"], patch_shape)


def _data_layout(inputs, axes):
    """The model's dimensions and channels for training data: (3 if the first file has a Z axis,
    else 2; the size of its axis C, or 1)."""
    first = read_image(find_tiffs(inputs)[0], axes, n_dim=None, n_channels=None)
    return first.stack.ndim - 1 - (first.n_channels > 1), first.n_channels


# -- pn2v noise-model ----------------------------------------------------------------------------

def _noise_model(args):
    output = Path(args.output if args.output.endswith(".npz") else args.output + ".npz")
    plot = Path(args.plot) if args.plot else output.with_suffix(".png")
    _refuse_existing(output, args.overwrite)
    if (args.observation is None) != (args.signal is None):
        raise UsageError("--signal and --observation go together")
    kept = ""
    if args.bootstrap:
        folder = _n2v_folder(args, output)
        noise_model, signal, observation, plots = _bootstrap(args, plot, folder)
        kept = f"; the N2V model it trained is in {folder} (pn2v predict --model {folder} denoises with it)"
    else:
        _refuse_training_options(args)
        signal, observation = (_calibration_pairs(args.calibration, args.axes) if args.calibration
                               else _file_pairs(args.signal, args.observation, args.axes))
        plots = _plot_paths(plot, signal.shape[-1] if signal.ndim == 2 else 1, args.overwrite)
        noise_model = _fit_noise_model(args, signal, observation)
    noise_model.plot(plot, signal=signal, observation=observation, overwrite=args.overwrite)
    noise_model.save(output, overwrite=args.overwrite)
    _say(f"{_noise_model_summary(noise_model, signal)}; wrote {output} and {', '.join(map(str, plots))}{kept}", args)


def _refuse_training_options(args):
    """The training options (those of the N2V model of --bootstrap) are refused with other sources;
    --seed, which also seeds a GMM fit, is not."""
    given = [f"--{key.replace('_', '-')}" for key in (*TRAINING_DEFAULTS, "validation_fraction", "n2v_model")
             if key != "seed" and getattr(args, key, None) is not None]
    if given:
        source = "--calibration" if args.calibration else "--signal"
        raise UsageError(f"{', '.join(given)}: training options are for --bootstrap (its N2V model); leave them out "
                         f"with {source}")


def _n2v_folder(args, output):
    """The model folder for the N2V model of --bootstrap: --n2v-model, else ``<output stem>_n2v`` beside
    the output; refused if it exists with files in it, unless --overwrite."""
    folder = Path(args.n2v_model) if args.n2v_model else output.with_name(output.stem + "_n2v")
    if folder.exists() and not folder.is_dir():
        raise InputError(folder, "exists and is not a folder; choose another --n2v-model for the N2V model")
    if folder.is_dir() and any(folder.iterdir()) and not args.overwrite:
        raise FileExistsError(f"{folder} exists (the N2V model of an earlier --bootstrap?); pass --overwrite to "
                              "replace it, or choose another --n2v-model")
    return folder


def _plot_paths(plot, n_channels, overwrite):
    """The PNG files the noise model's plot writes: ``plot``, or ``<plot>_c<channel>.png`` per channel
    (as :meth:`ChannelNoiseModels.plot` names them); refused if they exist and not ``overwrite``."""
    stem = str(plot)[:-4] if str(plot).endswith(".png") else str(plot)
    paths = [plot] if n_channels == 1 else [Path(f"{stem}_c{channel}.png") for channel in range(n_channels)]
    for path in paths:
        _refuse_existing(path, overwrite)
    return paths


def _noise_model_summary(noise_model, signal):
    """'<kind> noise model from <n> pixels: signals ..., values ... [in <bins> bins]', or one such part per
    channel."""
    models = getattr(noise_model, "models", [noise_model])
    ranges = [f"signals {m.signal_range[0]:.6g}..{m.signal_range[1]:.6g}, values {m.value_range[0]:.6g}.."
              f"{m.value_range[1]:.6g}" + (f" in {m.bins} bins" if hasattr(m, "bins") else "") for m in models]
    n_pixels = signal.size // len(models)
    if len(models) == 1:
        return f"{noise_model.kind} noise model from {n_pixels} pixels: {ranges[0]}"
    per_channel = "; ".join(f"channel {channel}: {text}" for channel, text in enumerate(ranges))
    kinds = "/".join(sorted({m.kind for m in models}))
    return f"{len(models)} {kinds} noise models, one per channel, from {n_pixels} pixels each: {per_channel}"


def _fit_noise_model(args, signal, observation):
    """One noise model of ``args.kind`` for pairs of 1-D arrays; for pairs (P, C) of several channels a
    :class:`ChannelNoiseModels` of one fitted to each channel's pairs."""
    from .noise_models import ChannelNoiseModels
    from .progress import bar

    pairs = ([(signal, observation)] if signal.ndim == 1
             else [(signal[:, c], observation[:, c]) for c in range(signal.shape[1])])
    fitting = bar(args.quiet, total=len(pairs), desc=f"fitting the {args.kind} noise model", unit="channel",
                  leave=False)
    models = []
    for channel_signal, channel_observation in pairs:
        models.append(_fit_one_noise_model(args, channel_signal, channel_observation))
        fitting.update(1)
    fitting.close()
    return models[0] if len(models) == 1 else ChannelNoiseModels(models)


def _fit_one_noise_model(args, signal, observation):
    """A noise model of ``args.kind`` fitted to 1-D arrays of pairs."""
    from .noise_models import GMMNoiseModel, HistogramNoiseModel

    if args.kind == "gmm":
        return GMMNoiseModel.fit(signal, observation, **_gmm_options(args))
    bins, value_range = _histogram_bins(args, signal, observation)
    return HistogramNoiseModel.from_pairs(signal, observation, bins=bins, value_range=value_range)


def _histogram_bins(args, signal, observation):
    """(bins, value_range) of a histogram: --bins and --value-range; without --value-range, integer
    observations (8- or 16-bit data) get bins on their possible values
    (:func:`~pn2v_tf.noise_models.histogram.integer_bins`, over the signals too), other data the
    default of :meth:`HistogramNoiseModel.from_pairs` (their minimum to maximum)."""
    from .noise_models.histogram import integer_bins

    grid = None if args.value_range is not None else _integer_grid(observation)
    if grid is None:
        return args.bins, args.value_range
    low = min(float(signal.min()), float(observation.min()))
    high = max(float(signal.max()), float(observation.max()))
    return integer_bins(low, high, args.bins, *grid)


def _integer_grid(values):
    """(step, origin) of integer ``values``: the integers they lie on are origin + j * step, step the
    greatest common divisor of their distances to the smallest (e.g. 16 for 12-bit data stored as
    multiples of 16); None if they are not all integers."""
    import numpy as np

    if not np.array_equal(values, np.round(values)):
        return None
    origin = int(values.min())
    step = int(np.gcd.reduce((values - origin).astype(np.int64), axis=None))
    return max(step, 1), origin


def _gmm_options(args):
    return dict(n_gaussians=args.n_gaussians, n_coeff=args.n_coeff, steps=args.gmm_steps, saturation=args.saturation,
                seed=args.seed if args.seed is not None else TRAINING_DEFAULTS["seed"])


def _calibration_pairs(inputs, axes):
    """Calibration stacks -> (signal, observation) as 1-D arrays, or arrays (pixels, C) of multichannel
    stacks; a signal is its stack's mean over frames, per channel.

    The frames are the stack's S, T or Z axis; a file with Z and a T (or S) axis holds frames (T) of
    a static volume (Z).
    """
    import numpy as np

    images = [_read_calibration(path, axes) for path in find_tiffs(inputs)]
    _check_same_channels(images)
    if len(images) > 1 and all(len(image.stack) == 1 for image in images):
        stacks = [_read_images([image.path for image in images], axes, n_channels=None)[0]]  # single frames: one stack
    else:
        for image in images:
            if len(image.stack) < 2:
                raise InputError(image.path, "a calibration stack needs at least 2 frames of a static sample; "
                                             "this file has 1 (give the stack, or a folder of single frames)")
        stacks = [image.stack for image in images]
    n_channels = images[0].n_channels
    signal = [_pixels(np.broadcast_to(stack.mean(axis=0), stack.shape), n_channels) for stack in stacks]
    return np.concatenate(signal), np.concatenate([_pixels(stack, n_channels) for stack in stacks])


def _pixels(stack, n_channels):
    """A stack's pixels as a 1-D array, or (pixels, C) for several channels (the stack's last axis)."""
    return stack.ravel() if n_channels == 1 else stack.reshape(-1, n_channels)


def _check_same_channels(images):
    """All images have the first one's number of channels, or an InputError names the first that differs."""
    first = images[0]
    for image in images[1:]:
        if image.n_channels != first.n_channels:
            raise InputError(image.path, f"{channels_text(image.n_channels)} (axes {image.axes!r}), unlike the "
                                         f"{first.n_channels} of {first.path}; all images need the same channels")


def _read_calibration(path, axes):
    image = read_image(path, axes, n_channels=None)
    frames = [a for a in image.axes if a in "STZ"]
    return read_image(path, axes, n_dim=3, n_channels=None) if "Z" in frames and len(frames) > 1 else image


def _file_pairs(signal_inputs, observation_inputs, axes):
    """Clean and noisy TIFFs paired in sorted order -> (signal, observation) as in :func:`_calibration_pairs`."""
    import numpy as np

    signals, observations = find_tiffs(signal_inputs), find_tiffs(observation_inputs)
    if len(signals) != len(observations):
        raise UsageError(f"{len(signals)} --signal files but {len(observations)} --observation files; "
                         "they are paired in sorted order")
    pairs, first = [], None
    for signal_path, observation_path in zip(signals, observations):
        signal, observation = (read_image(path, axes, n_channels=None) for path in (signal_path, observation_path))
        _check_same_channels([first or signal, signal, observation])
        first = first or signal
        try:
            pairs.append(_flat_pairs(signal.stack, observation.stack, signal.n_channels))
        except ValueError as error:
            raise InputError(observation_path, f"{error} (its clean image: {signal_path})") from None
    return np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])


def _flat_pairs(signal, observation, n_channels):
    """:func:`flatten_pairs` of stacks, channel by channel (their last axis) when there are several."""
    import numpy as np

    from .noise_models.pairs import flatten_pairs

    if n_channels == 1:
        return flatten_pairs(signal, observation)
    pairs = [flatten_pairs(signal[..., c], observation[..., c]) for c in range(n_channels)]
    return np.stack([p[0] for p in pairs], axis=-1), np.stack([p[1] for p in pairs], axis=-1)


def _bootstrap(args, plot, folder):
    """Train N2V on the noisy images into the model folder ``folder``, predict the signal with it and fit
    the noise model (one per channel) to the pairs: (noise model, signal, observation, plot paths), the
    pairs as 1-D arrays, or (pixels, C) of several channels."""
    import keras

    from .model import PN2V

    settings = _settings(args, TRAINING_DEFAULTS, TRAINING_DEFAULTS)
    n_dim, n_channels = _data_layout(args.bootstrap, args.axes)
    patch_shape = _config(None, "n2v", settings, n_dim).n2v_patch_shape
    images, files = _read_images(args.bootstrap, args.axes, patch_shape, n_dim=n_dim, n_channels=n_channels)
    plots = _plot_paths(plot, n_channels, args.overwrite)
    X, X_val = _split_validation(images, files, args.validation_fraction or 0.1, patch_shape)
    keras.utils.set_random_seed(settings["seed"])
    n2v = PN2V(_config(X, "n2v", settings, n_dim, n_channels), folder.name, basedir=str(folder.parent),
               overwrite=args.overwrite)
    _fit(n2v, X, X_val, settings, args.quiet, description="N2V for the bootstrap")
    signal = _predict_signal(n2v, images, args.quiet)
    signal, observation = _pixels(signal, n_channels), _pixels(images, n_channels)
    return _fit_noise_model(args, signal, observation), signal, observation, plots


def _predict_signal(n2v, images, quiet):
    """The N2V model's prediction of a stack of images (S, *spatial[, C]), with a bar over its tiles."""
    from .arrays import spatial_axes
    from .progress import TileProgress

    axes = "S" + spatial_axes(n2v.config.n_dim) + ("C" if n2v.config.n_channels > 1 else "")
    tiles = TileProgress("N2V signal", quiet)
    try:
        return n2v.predict(images, axes=axes, progress=tiles)
    finally:
        tiles.close()


# -- pn2v train ----------------------------------------------------------------------------------

def _train(args):
    folder = Path(args.model)
    if args.resume:
        return _resume(args, folder)
    settings = _settings(args, list(TRAINING_DEFAULTS) + list(_RUN_SETTINGS) + ["mode", "noise_model"],
                         {**TRAINING_DEFAULTS, "mode": "pn2v", "validation_fraction": 0.1})
    _refuse_images_as_noise_models(settings["noise_model"])
    if not settings["inputs"]:
        raise UsageError("give the training TIFFs (files, folders or patterns)")
    if settings["mode"] == "pn2v" and not settings["noise_model"]:
        raise UsageError("--mode pn2v needs --noise-model (make one with pn2v noise-model), or use --mode n2v")
    if (folder / "config.json").exists() and not args.overwrite:
        raise FileExistsError(f"{folder}: a model exists there; pass --overwrite to replace it, or --resume to "
                              "continue its training")
    n_dim, n_channels = _data_layout(settings["inputs"], settings["axes"])
    _config(None, settings["mode"], settings, n_dim, n_channels)  # options checked before the data are read
    noise_model = None
    if settings["mode"] == "pn2v":
        noise_model = _training_noise_model(settings["noise_model"], n_channels)
    X, X_val = _training_data(settings, noise_model, n_dim, n_channels)

    import keras

    from .model import PN2V
    from .resume import EpochCheckpoint, remove_training_files

    keras.utils.set_random_seed(settings["seed"])
    with warnings.catch_warnings():  # a shared noise model was announced by _training_noise_model
        warnings.filterwarnings("ignore", message="one noise model for", category=UserWarning)
        model = PN2V(_config(X, settings["mode"], settings, n_dim, n_channels), folder.name,
                     basedir=str(folder.parent), noise_model=noise_model, overwrite=args.overwrite)
    remove_training_files(model.logdir)  # a state without a config.json, left by an interrupted start
    _absolute_paths(settings)
    _train_model(model, X, X_val, settings, args, EpochCheckpoint(model, settings), 0)


def _refuse_images_as_noise_models(paths):
    """--noise-model takes every path after it: TIFFs or folders there were meant as training inputs."""
    for path in paths or ():
        if Path(path).is_dir() or Path(path).suffix.lower() in (".tif", ".tiff"):
            raise UsageError(f"--noise-model takes noise model files (.npz), not {path}; it takes every path that "
                             "follows it, so put the training TIFFs before it")


def _training_noise_model(paths, n_channels):
    """The noise model of images with ``n_channels`` channels from the ``--noise-model`` files: one
    file (of one channel, applied to every channel with a warning, or of ``n_channels`` channels), or
    one single-channel file per channel."""
    from .noise_models import ChannelNoiseModels, load_noise_model

    models = [load_noise_model(path) for path in paths]
    if len(models) == 1:
        return _one_noise_model_file(paths[0], models[0], n_channels)
    if len(models) != n_channels:
        raise UsageError(f"{len(models)} --noise-model files for images of {channels_text(n_channels)}: give one "
                         "per channel (in channel order), one file of all channels, or one file for every channel")
    for path, model in zip(paths, models):
        if isinstance(model, ChannelNoiseModels):
            raise InputError(path, f"holds the noise models of {channels_text(model.n_channels)}; with one "
                                   "--noise-model file per channel each must be of one channel")
    return ChannelNoiseModels(models)


def _one_noise_model_file(path, model, n_channels):
    """A single ``--noise-model`` file's model for images of ``n_channels`` channels."""
    from .noise_models import ChannelNoiseModels

    channels = model.n_channels if isinstance(model, ChannelNoiseModels) else 1
    if channels > 1 and channels != n_channels:
        raise InputError(path, f"holds the noise models of {channels_text(channels)}, but the images have "
                               f"{channels_text(n_channels)}")
    if channels == 1 and n_channels > 1:
        warnings.warn(f"{path} is one channel's noise model: it is applied to each of the {n_channels} channels "
                      "(give one --noise-model file per channel if their noise differs)")
    return model


def _resume(args, folder):
    from .resume import STATE_FILE, EpochCheckpoint, load_state, restore

    given = [f"--{name.replace('_', '-')}" for name in _FIXED_ON_RESUME if getattr(args, name) is not None]
    given += ["--overwrite"] if args.overwrite else []
    if given:
        raise UsageError(f"--resume continues with the model's configuration; leave out {', '.join(given)}")
    _model_folder(folder)
    if not (folder / STATE_FILE).is_file():
        raise InputError(folder, f"no {STATE_FILE}: no completed epoch to resume from (train without --resume)")
    state = load_state(folder / STATE_FILE)
    settings = {**state.settings, **{k: v for k, v in _settings(args, _RUN_SETTINGS, {}).items() if v}}
    if state.epoch >= settings["epochs"]:
        raise InputError(folder, f"the training has done all {settings['epochs']} epochs; pass a larger --epochs "
                                 "to train further")
    model = _load_model(folder)
    X, X_val = _training_data(settings, model.noise_model, model.config.n_dim, model.config.n_channels)
    model.prepare_for_training()
    restore(model, state)
    _absolute_paths(settings)
    _say(f"resuming {folder} after epoch {state.epoch} of {settings['epochs']}", args)
    _train_model(model, X, X_val, settings, args, EpochCheckpoint(model, settings, state), state.epoch)


def _train_model(model, X, X_val, settings, args, checkpoint, initial_epoch):
    folder = model.logdir
    try:
        _fit(model, X, X_val, settings, args.quiet, initial_epoch, checkpoint)
    except KeyboardInterrupt:
        done = checkpoint.history[-1]["epoch"] if checkpoint.history else 0
        kept = (f"{done} of {settings['epochs']} epochs are saved in {folder}; continue with: "
                f"pn2v train --model {folder} --resume") if done else "no epoch was completed, nothing is saved"
        raise Interrupted(kept) from None
    except FloatingPointError as error:
        raise FloatingPointError(f"{error} (pn2v train --learning-rate; the last finite epoch's state is in "
                                 f"{folder})") from None
    best = min(checkpoint.history, key=lambda row: row["val_loss"])
    _say(f"trained {folder}: {checkpoint.history[-1]['epoch']} epochs, best val_loss {best['val_loss']:.4f} "
         f"(epoch {best['epoch']}) in weights_best.h5", args)
    if model.spread_factors is not None:
        from .calibration import calibration_message

        _say(calibration_message(model.spread_factors), args)


def _absolute_paths(settings):
    """Record input paths so that --resume finds them from any working directory."""
    for key in ("inputs", "validation"):
        if settings.get(key):
            settings[key] = [os.path.abspath(p) for p in settings[key]]
    if isinstance(settings.get("noise_model"), str):  # the state of a run before several files were taken
        settings["noise_model"] = os.path.abspath(settings["noise_model"])
    elif settings.get("noise_model"):
        settings["noise_model"] = [os.path.abspath(p) for p in settings["noise_model"]]


# -- pn2v predict --------------------------------------------------------------------------------

def _predict(args):
    package = _is_package(args.model)
    folder = Path(args.model) if package else _model_folder(args.model)
    if package and args.estimator == "posterior":
        raise UsageError("--estimator posterior needs a model folder; a bioimage.io package gives mmse and prior_mean")
    if args.tta and (package or args.estimator == "posterior"):
        raise UsageError("--tta averages mmse or prior_mean predictions of a model folder (not posterior samples, "
                         "not a bioimage.io package)")
    if package and args.dtype_policy:
        raise UsageError("--dtype-policy is for model folders; a bioimage.io package's graph has its own")
    if package and args.n_tiles:
        raise UsageError("--n-tiles is for model folders; a bioimage.io package's graph bounds its memory itself")
    from .zarr_io import is_zarr

    large = [Path(item) for item in args.inputs if is_zarr(item)]
    tiffs = find_tiffs([item for item in args.inputs if not is_zarr(item)]) if len(large) < len(args.inputs) else []
    if args.zarr:
        large, tiffs = large + tiffs, []
    outdir = Path(args.output)
    if outdir.exists() and not outdir.is_dir():
        raise InputError(outdir, "exists and is not a folder")
    if large:
        return _predict_large(args, large, tiffs, folder, package, outdir)
    inputs = tiffs
    outputs = _output_paths(inputs, outdir, args.overwrite)
    if args.n_posterior < 1 or (args.n_tiles and min(args.n_tiles) < 1):
        raise UsageError("--n-posterior and --n-tiles must be at least 1")
    model = _load_package(folder) if package else _load_model(folder)
    try:
        if args.n_tiles and len(args.n_tiles) != _dims(model):
            raise UsageError(f"--n-tiles takes {_dims(model)} values for this {_dims(model)}-D model, got "
                             f"{len(args.n_tiles)}")
        if args.estimator == "posterior" and model.config.mode != "pn2v":
            raise UsageError(f"--estimator posterior needs a pn2v model; {folder} has mode {model.config.mode!r}")
        _check_inputs(model, inputs, args, package)
        outdir.mkdir(parents=True, exist_ok=True)
        _predict_files(model, inputs, outputs, args)
    finally:
        if package:
            model.close()  # removes the unpacked SavedModel
    _say(f"wrote {len(outputs)} denoised file{'s' if len(outputs) > 1 else ''} ({args.estimator}) to {outdir}", args)


def _predict_large(args, large, tiffs, folder, package, outdir):
    """zarr / OME-Zarr inputs (and TIFFs with --zarr) block by block into OUTPUT_DIR/<name>.zarr."""
    from .zarr_io import open_large_image, output_path

    if tiffs:
        raise UsageError("give zarr inputs and TIFFs in separate runs (or all of them with --zarr)")
    if package:
        raise UsageError("zarr prediction needs a model folder; a bioimage.io package predicts TIFFs in memory")
    if args.estimator == "posterior" or args.n_tiles or args.dtype != "float32":
        raise UsageError("zarr outputs are float32 mmse or prior_mean, tiled by blocks of chunks: leave out "
                         "--estimator posterior, --n-tiles and --dtype")
    model = _load_model(folder)
    default_axes = "ZYX"[-_dims(model):] + ("C" if _channels(model) > 1 else "")
    images = [open_large_image(path, args.axes, default_axes) for path in large]
    outputs = [output_path(image, outdir) for image in images]
    for image, output in zip(images, outputs):
        if output.resolve() == image.path.resolve():
            raise InputError(output, "the result would replace this input; choose another output folder")
    for image in images:
        _check_large_input(model, image, args)
    outdir.mkdir(parents=True, exist_ok=True)
    for image, output in zip(images, outputs):
        _predict_large_image(model, image, output, args)
    _say(f"wrote {len(outputs)} denoised zarr array{'s' if len(outputs) > 1 else ''} ({args.estimator}) to {outdir}",
         args)


def _check_large_input(model, image, args):
    from .chunked import check_values, plan_blocks

    try:
        plan_blocks(model, image.data, image.axes)
        check_values(model, image.data, image.axes, args.estimator, name="pixel",
                     error_margin=None if args.allow_out_of_range else RANGE_ERROR_MARGIN)
    except ValueError as error:
        raise InputError(image.path, str(error)) from None


def _predict_large_image(model, image, output, args):
    import shutil

    from .chunked import PREDICTION_ATTRIBUTE, predict_to_zarr
    from .progress import TileProgress
    from .zarr_io import finish_ome_zarr, full_resolution_path, start_ome_zarr

    if output.exists() and args.overwrite:
        shutil.rmtree(output) if output.is_dir() else output.unlink()
    level = full_resolution_path(image, output)
    if output.exists() and not _unfinished_prediction(level, PREDICTION_ATTRIBUTE):
        raise FileExistsError(f"{output} exists and is not a prediction by pn2v; pass --overwrite to replace it")
    if image.multiscales is not None:
        start_ome_zarr(image, output)
    blocks = TileProgress(f"{image.path.name} (blocks)", args.quiet)
    try:
        predict_to_zarr(model, image.data, level, axes=image.axes, estimator=args.estimator, chunks=image.chunks,
                        scheduler=_scheduler(args.scheduler), progress=blocks, check=False,
                        zarr_format=image.zarr_format, tta=args.tta, dtype_policy=args.dtype_policy)
    finally:
        blocks.close()
    if image.multiscales is not None:
        finish_ome_zarr(image, output)


def _unfinished_prediction(path, attribute):
    import zarr

    try:
        return attribute in zarr.open_array(str(path), mode="r").attrs
    except Exception:
        return False


def _scheduler(name):
    """A Dask scheduler name, or a dask.distributed client of a scheduler's address."""
    if "://" not in name and ":" not in name:
        if name not in ("threads", "synchronous", "processes"):
            raise UsageError(f"--scheduler must be threads, synchronous or a dask.distributed address, got {name!r}")
        return name
    from distributed import Client

    return Client(name)


def _check_inputs(model, inputs, args, package):
    """Every input is checked before anything is written."""
    uses_noise_model = args.estimator != "prior_mean" and model.noise_model is not None
    for path in inputs:
        image = read_image(path, args.axes, _dims(model), _channels(model))
        _output_dtype(image, args.dtype)
        _result_axes(image, args.estimator)
        if package and any(side < low for side, low in zip(_spatial_shape(image), model.block)):
            raise InputError(path, f"images of {_size(image)} pixels; the package takes at least "
                                   f"{' x '.join(str(b) for b in model.block)}")
        if uses_noise_model:
            _check_range(model.noise_model, image, args.allow_out_of_range)


def _predict_files(model, inputs, outputs, args):
    from .progress import TileProgress, bar

    files = bar(args.quiet, total=len(inputs), desc="files", unit="file")
    for path, output in zip(inputs, outputs):
        image = read_image(path, args.axes, _dims(model), _channels(model))
        tiles = TileProgress(path.name, args.quiet)
        try:
            result, axes = _denoise(model, image, args, tiles)
        finally:
            tiles.close()
        _write_result(output, result, axes, _output_dtype(image, args.dtype), args.overwrite)
        files.update(1)
    files.close()


def _dims(model):
    """2 or 3: the spatial dimensions of a model folder's or a package's network."""
    return model.n_dim if hasattr(model, "n_dim") else model.config.n_dim


def _channels(model):
    """The number of channels a model folder's model or a package takes."""
    return model.config.n_channels if hasattr(model, "config") else getattr(model, "n_channels", 1)


def _output_paths(inputs, outdir, overwrite):
    outputs, sources = [], {}
    for path in inputs:
        output = outdir / (path.stem + ".tif")
        if output in sources:
            raise InputError(path, f"{sources[output]} has the same name; both would be written to {output}")
        if output.exists() and output.resolve() in {p.resolve() for p in inputs}:
            raise InputError(output, "the result would replace this input; choose another output folder")
        _refuse_existing(output, overwrite)
        sources[output] = path
        outputs.append(output)
    return outputs


def _output_dtype(image, dtype):
    if dtype != "same":
        return dtype
    if image.data.dtype.name not in IMAGEJ_DTYPES:
        raise InputError(image.path, f"--dtype same: {image.data.dtype.name} cannot be written as an ImageJ TIFF; "
                                     f"choose --dtype {', '.join(IMAGEJ_DTYPES)}")
    return image.data.dtype.name


def _result_axes(image, estimator):
    """Axes of an image's result: the image's; posterior samples come first as ImageJ channels C, or,
    for a multichannel image, as frames T (slices Z if it has T). Raises InputError if an ImageJ TIFF
    cannot hold them (checked before anything is written)."""
    from .io import imagej_axes

    axes = image.axes
    try:
        taken = imagej_axes(axes)
        if estimator == "posterior":
            free = [a for a in ("TZ" if "C" in axes else "C") if a not in taken]
            if not free:
                raise ValueError(f"its posterior samples need a sixth axis beside {taken!r}; ImageJ TIFFs hold "
                                 "T, Z, C, Y, X (denoise its frames as separate files)")
            axes = free[0] + axes
            imagej_axes(axes)
    except ValueError as error:
        raise InputError(image.path, f"the result cannot be written: {error}") from None
    return axes


def _denoise(model, image, args, progress):
    with _ranges_checked():
        return _estimate(model, image, args, progress)


def _estimate(model, image, args, progress):
    n_tiles = tuple(args.n_tiles) if args.n_tiles else None
    if args.estimator == "posterior":
        samples = model.sample_posterior(image.data, n_samples=args.n_posterior, axes=image.axes, n_tiles=n_tiles,
                                         seed=args.seed, progress=progress, dtype_policy=args.dtype_policy)
        return samples, _result_axes(image, "posterior")
    options = (({} if n_tiles is None else {"n_tiles": n_tiles}) | ({"tta": True} if args.tta else {})
               | ({} if args.dtype_policy is None else {"dtype_policy": args.dtype_policy}))
    return model.predict(image.data, axes=image.axes, estimator=args.estimator, progress=progress,
                         **options), image.axes


def _write_result(output, result, axes, dtype, overwrite):
    from .io import as_dtype, write_tiff

    result, clipped = as_dtype(result, dtype)
    if clipped:
        warnings.warn(f"{output}: {clipped} pixels were clipped to the range of {dtype}")
    write_tiff(output, result, axes, overwrite=overwrite)


# -- pn2v export ---------------------------------------------------------------------------------

def _export(args):
    from .model import EXAMPLE_INPUT_FILE

    folder = _model_folder(args.model)
    output = Path(args.output)
    kind = args.format if args.format != "auto" else ("bioimageio" if output.suffix == ".zip" else "savedmodel")
    if kind == "bioimageio":
        if args.xla:
            raise UsageError("--xla is for --format savedmodel: a bioimage.io package runs without XLA, as "
                             "deepImageJ needs")
        output = output if output.suffix == ".zip" else output.with_name(output.name + ".zip")
        if args.test_input is None and not (folder / EXAMPLE_INPUT_FILE).is_file():
            raise UsageError(f"a bioimage.io package needs --test-input TIFF (a raw noisy image for its test); "
                             f"{folder} keeps no {EXAMPLE_INPUT_FILE} (trained before pn2v_tf kept one)")
    _refuse_existing(output, args.overwrite)
    model = _load_model(folder)
    if kind == "savedmodel":
        model.export_SavedModel(output, overwrite=args.overwrite, jit_compile=args.xla)
    else:
        read = dict(n_dim=model.config.n_dim, n_channels=model.config.n_channels)
        test_input = (read_image(args.test_input, args.axes, **read) if args.test_input is not None
                      else read_image(folder / EXAMPLE_INPUT_FILE, **read)).stack[0]
        model.export_bioimageio(output, test_input, overwrite=args.overwrite, name=args.name,
                                description=args.description, license=args.license,
                                authors=[{"name": name} for name in args.author] or None)
    print(f"wrote {output} ({kind})")


# -- pn2v evaluate -------------------------------------------------------------------------------

def _evaluate(args):
    import numpy as np

    from .metrics import psnr, psnr_scale_invariant

    if args.csv:
        _refuse_existing(args.csv, args.overwrite)
    rows = []
    for prediction_path, truth_path in _pair_by_name(find_tiffs(args.predictions), find_tiffs(args.ground_truth)):
        prediction, truth = read_image(prediction_path, args.axes), read_image(truth_path, args.axes)
        if prediction.stack.shape != truth.stack.shape:
            raise InputError(prediction_path, f"shape {prediction.data.shape} differs from the ground truth's "
                                              f"{truth.data.shape} ({truth_path})")
        try:
            values = [(psnr(t, p, args.data_range), psnr_scale_invariant(t, p, args.data_range))
                      for t, p in zip(truth.stack, prediction.stack)]
        except ValueError as error:
            raise InputError(truth_path, f"{error}; give --data-range") from None
        rows.append((prediction_path, truth_path, np.array(values)))
    everything = np.concatenate([values for *_, values in rows])
    table = [[str(p), str(t), len(v), *v.mean(axis=0)] for p, t, v in rows]
    table.append(["mean", "", len(everything), *everything.mean(axis=0)])
    print(format_table(table))
    if args.csv:
        _write_csv(args.csv, table)


TABLE_COLUMNS = ("prediction", "ground truth", "images", "PSNR (dB)", "scale-invariant PSNR (dB)")


def format_table(table):
    """Markdown table of evaluation rows (prediction, ground truth, images, PSNR, scale-invariant PSNR)."""
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    lines += [f"| {p} | {t} | {n} | {a:.2f} | {b:.2f} |" for p, t, n, a, b in table]
    return "\n".join(lines)


def _write_csv(path, table):
    import csv

    from .io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(TABLE_COLUMNS)
        writer.writerows(table)


def _pair_by_name(predictions, truths):
    if len(predictions) == 1 and len(truths) == 1:
        return [(predictions[0], truths[0])]
    by_stem = {}
    for path in truths:
        if path.stem in by_stem:
            raise InputError(path, f"{by_stem[path.stem]} has the same name; ground truths are matched by name")
        by_stem[path.stem] = path
    missing = [p for p in predictions if p.stem not in by_stem]
    if missing:
        raise InputError(missing[0], f"no ground-truth file named {missing[0].stem}.tif among --ground-truth")
    return [(p, by_stem[p.stem]) for p in predictions]


def _say(text, args):
    from .progress import say
    say(text, getattr(args, "quiet", False))


if __name__ == "__main__":
    sys.exit(main())
