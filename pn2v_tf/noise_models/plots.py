"""Inspection plots of noise models p(x|s), written to PNG files.

:func:`plot_noise_model` shows one model: ``p(x|s)`` as an image over signal and observation, and
a few slices ``p(x|s)`` against ``x`` next to the empirical density of the data it was fitted to.
:func:`plot_fit_summary` compares models on held-out (signal, observation) pairs: the mean
log-likelihood of each, the same per signal band, and training curves of models that record a
``fit_history``.

Figures are made with :class:`matplotlib.figure.Figure` directly, never through ``pyplot``, so
nothing depends on (or changes) matplotlib's global backend and no figure stays open. Both
functions return the numbers they plotted.
"""

import os
from collections.abc import Mapping

import numpy as np

from .._checks import is_int
from .base import NoiseModel
from ..io import atomic_path
from .pairs import flatten_pairs

#: Default half-width of the signal band around each slice, as a fraction of the signal range.
WINDOW_FRACTION = 0.01
#: Lowest colour of the p(x|s) image, relative to its maximum (log scale).
DYNAMIC_RANGE = 1e-6
DPI = 100


def plot_noise_model(noise_model, path, signal=None, observation=None, n_slices=4, bins=256,
                     overwrite=False, window=None):
    """Write a PNG of ``p(x|s)``: an image over (s, x) and ``n_slices`` slices against x.

    Parameters
    ----------
    noise_model : NoiseModel
        The model to show.
    path : str or os.PathLike
        PNG file to write (must end in ``.png``).
    signal, observation : numpy.ndarray or None
        Optional (signal, observation) pairs, e.g. the data the model was fitted to, paired as in
        :func:`flatten_pairs`. Each slice at signal ``s`` is then drawn over the histogram (as a
        density) of the observations whose signal lies within ``window`` of ``s``.
    n_slices : int
        Number of slices, >= 1, evenly spread over the model's ``signal_range``. Default: 4.
    bins : int
        Grid points per axis of the image, and bins of the empirical histograms, >= 2.
    overwrite : bool
        Replace an existing file. Default: refuse with ``FileExistsError``.
    window : float or None
        Half-width (counts) of the signal band around each slice; default: 1 % of the signal
        range.

    Returns
    -------
    dict
        ``signal`` (bins,) and ``observation`` (bins,): the grid; ``log_likelihood``
        (bins, bins): ``log p(x|s)`` on it, rows x, columns s; ``slice_signals`` (n_slices,);
        ``observation_edges`` (bins + 1,) of the empirical histograms; ``empirical_density``: per
        slice the density (bins,) of the nearby observations, or None without data (or with no
        pair near that slice); ``pairs_per_slice`` (n_slices,): how many pairs each used.
    """
    path = _check_path(path, overwrite)
    _check_model(noise_model, "noise_model")
    if not is_int(n_slices, 1):
        raise ValueError(f"n_slices must be an integer >= 1, got {n_slices!r}")
    if not is_int(bins, 2):
        raise ValueError(f"bins must be an integer >= 2, got {bins!r}")
    if (signal is None) != (observation is None):
        raise ValueError("give both signal and observation, or neither")
    if window is not None and not (np.isscalar(window) and np.isfinite(window) and window >= 0):
        raise ValueError(f"window must be a finite number >= 0, got {window!r}")
    pairs = None if signal is None else flatten_pairs(signal, observation)

    numbers = _model_grid(noise_model, bins, n_slices)
    s_low, s_high = numbers["signal"][0], numbers["signal"][-1]
    if window is None:
        window = WINDOW_FRACTION * (s_high - s_low)
    numbers.update(_empirical_slices(pairs, numbers["slice_signals"], window,
                                     np.linspace(*noise_model.value_range, bins + 1)))

    from matplotlib.figure import Figure
    from matplotlib.colors import LogNorm

    fig = Figure(figsize=(12, 4.8), layout="constrained")
    image_ax, slice_ax = fig.subplots(1, 2, width_ratios=(1, 1.15))
    p = np.exp(numbers["log_likelihood"].astype(np.float64))
    peak = float(p.max())
    mesh = image_ax.pcolormesh(numbers["signal"], numbers["observation"], p, shading="nearest",
                               cmap="viridis", rasterized=True,
                               norm=LogNorm(vmin=peak * DYNAMIC_RANGE, vmax=peak, clip=True))
    fig.colorbar(mesh, ax=image_ax, label="p(x | s)  [1 / counts]")
    image_ax.set_xlabel("signal s  [counts]")
    image_ax.set_ylabel("observation x  [counts]")
    image_ax.set_title("p(x | s), log colour scale")

    colours = [f"C{k % 10}" for k in range(n_slices)]
    x, edges = numbers["observation"], numbers["observation_edges"]
    for k, (s, colour) in enumerate(zip(numbers["slice_signals"], colours)):
        image_ax.axvline(s, color=colour, linestyle="--", linewidth=1)
        density = numbers["empirical_density"][k]
        if density is not None:
            slice_ax.stairs(density, edges, color=colour, alpha=0.3, fill=True,
                            label=f"data, n = {numbers['pairs_per_slice'][k]}")
        slice_ax.plot(x, np.exp(noise_model.log_likelihood(x, np.full_like(x, s))), color=colour,
                      label=f"model, s = {s:.4g}")
    slice_ax.set_xlabel("observation x  [counts]")
    slice_ax.set_ylabel("p(x | s)  [1 / counts]")
    slice_ax.set_title("slices p(x | s)" if pairs is None else
                       f"slices: model (lines), data with signal within ±{window:.3g} (shaded)", fontsize=10)
    slice_ax.legend(fontsize=7)
    fig.suptitle(f"{_kind(noise_model)} noise model: signal range [{s_low:.4g}, {s_high:.4g}], "
                 f"value range [{noise_model.value_range[0]:.4g}, {noise_model.value_range[1]:.4g}]")
    _save(fig, path)
    return numbers


def plot_fit_summary(noise_models, signal, observation, path, reference=None, overwrite=False,
                     signal_bins=20):
    """Write a PNG comparing noise models by their log-likelihood of held-out pairs.

    Panels: (a) the mean ``log p(x|s)`` over all pairs per model, with its gap to ``reference``;
    (b) the mean per signal band, one curve per model; (c) training curves of models with a
    ``fit_history`` attribute (a mapping with ``loss``: training negative log-likelihood per
    iteration, optional ``val_loss`` and ``val_step``: the iteration of each ``val_loss``), only
    if some model has one.

    Parameters
    ----------
    noise_models : dict
        Name -> NoiseModel, at least one.
    signal, observation : numpy.ndarray
        Held-out pairs, paired as in :func:`flatten_pairs`.
    path : str or os.PathLike
        PNG file to write (must end in ``.png``).
    reference : NoiseModel or callable or None
        The true log-likelihood, e.g. the analytic camera model: a noise model, or a function
        ``(observation, signal) -> log p`` of 1-D arrays. Drawn as a baseline.
    overwrite : bool
        Replace an existing file. Default: refuse with ``FileExistsError``.
    signal_bins : int
        Number of equal signal bands of panel (b), >= 1. Default: 20.

    Returns
    -------
    dict
        Name -> mean held-out log-likelihood (nats per pair), plus ``"reference"`` if given.
    """
    path = _check_path(path, overwrite)
    if not isinstance(noise_models, Mapping) or not noise_models:
        raise ValueError("noise_models must be a non-empty dict of name -> NoiseModel")
    for name, model in noise_models.items():
        _check_model(model, f"noise_models[{name!r}]")
    if reference is not None and "reference" in noise_models:
        raise ValueError("a model named 'reference' clashes with the reference baseline; rename it")
    if reference is not None and not callable(reference):
        raise ValueError(f"reference must be a NoiseModel or a callable, got {type(reference).__name__}")
    if not is_int(signal_bins, 1):
        raise ValueError(f"signal_bins must be an integer >= 1, got {signal_bins!r}")
    histories = {name: _fit_history(model, name) for name, model in noise_models.items()}
    histories = {name: history for name, history in histories.items() if history is not None}
    signal, observation = flatten_pairs(signal, observation)

    scores = {name: model.log_likelihood(observation, signal).astype(np.float64)
              for name, model in noise_models.items()}
    if reference is not None:
        scores["reference"] = _reference_log_likelihood(reference, observation, signal)
    means = {name: float(np.mean(values)) for name, values in scores.items()}
    edges = np.linspace(signal.min(), signal.max(), signal_bins + 1)
    band = np.clip(np.searchsorted(edges, signal, side="right") - 1, 0, signal_bins - 1)
    per_band = np.bincount(band, minlength=signal_bins)
    filled = per_band > 0
    centres = 0.5 * (edges[:-1] + edges[1:])

    from matplotlib.figure import Figure

    n_panels = 3 if histories else 2
    fig = Figure(figsize=(5.0 * n_panels, 4.6), layout="constrained")
    axes = fig.subplots(1, n_panels)

    names = list(noise_models)
    bar_ax = axes[0]
    bars = bar_ax.bar(names, [means[name] for name in names], color=[f"C{k % 10}" for k in range(len(names))])
    for name, bar in zip(names, bars):
        text = f"{means[name]:.4f}"
        if reference is not None:
            text += f"\n(vs reference {means[name] - means['reference']:+.4f})"
        bar_ax.annotate(text, (bar.get_x() + bar.get_width() / 2, means[name]), ha="center",
                        va="top" if means[name] < 0 else "bottom", fontsize=8,
                        xytext=(0, -3 if means[name] < 0 else 3), textcoords="offset points")
    if reference is not None:
        bar_ax.axhline(means["reference"], color="k", linestyle="--", linewidth=1,
                       label=f"reference {means['reference']:.4f}")
        bar_ax.legend(fontsize=8)
    low, high = min(min(means.values()), 0.0), max(max(means.values()), 0.0)
    bar_ax.set_ylim(low - 0.15 * (high - low + 1e-12), high + 0.15 * (high - low + 1e-12))
    bar_ax.axhline(0, color="0.5", linewidth=0.5)
    bar_ax.set_ylabel("mean log p(x | s)  [nats per pixel]")
    bar_ax.set_title(f"(a) held-out log-likelihood, {signal.size} pairs")

    band_ax = axes[1]
    band_means = {name: np.bincount(band, weights=values, minlength=signal_bins)[filled] / per_band[filled]
                  for name, values in scores.items()}
    baseline = band_means.get("reference", 0.0)
    for k, name in enumerate(scores):
        style = dict(color="k", linestyle="--") if name == "reference" else dict(color=f"C{k % 10}")
        band_ax.plot(centres[filled], band_means[name] - baseline, marker=".", label=name, **style)
    gap = "" if reference is None else " - reference"
    band_ax.set_xlabel("signal s  [counts]")
    band_ax.set_ylabel(f"mean log p(x | s){gap}  [nats per pixel]")
    band_ax.set_title(f"(b) per signal band ({signal_bins} bands){gap}")
    band_ax.legend(fontsize=8)

    if histories:
        curve_ax = axes[2]
        for name, history in histories.items():
            colour = f"C{names.index(name) % 10}"
            curve_ax.plot(np.arange(len(history["loss"])), history["loss"], color=colour,
                          label=f"{name} training")
            if "val_loss" in history:
                curve_ax.plot(history["val_step"], history["val_loss"], color=colour, linestyle="--",
                              marker=".", label=f"{name} validation")
        curve_ax.set_xlabel("iteration")
        curve_ax.set_ylabel("negative log-likelihood")
        curve_ax.set_title("(c) fit history")
        curve_ax.legend(fontsize=8)

    fig.suptitle("noise model fit on held-out pairs (higher log-likelihood is better)")
    _save(fig, path)
    return means


# -- helpers -------------------------------------------------------------------------------------

def _check_path(path, overwrite):
    path = os.fspath(path)
    if not path.lower().endswith(".png"):
        raise ValueError(f"plot path must end in .png, got {path!r}")
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"plot file exists: {path} (pass overwrite=True to replace it)")
    return path


def _save(fig, path):
    """Write ``fig`` to a temporary PNG next to ``path``, then move it into place."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI)
    finally:
        fig.clear()


def _check_model(model, name):
    if not isinstance(model, NoiseModel):
        raise ValueError(f"{name} must be a NoiseModel, got {type(model).__name__}")


def _kind(model):
    return model.kind or type(model).__name__


def _model_grid(noise_model, bins, n_slices):
    """log p(x|s) on ``bins`` observations (bin centres of value_range) x ``bins`` signals."""
    x_low, x_high = noise_model.value_range
    width = (x_high - x_low) / bins
    s_low, s_high = noise_model.signal_range
    if s_high <= s_low:  # one calibrated signal: show a band one bin wide around it
        s_low, s_high = s_low - 0.5 * width, s_high + 0.5 * width
    x = x_low + (np.arange(bins) + 0.5) * width
    s = np.linspace(s_low, s_high, bins)
    log_p = noise_model.log_likelihood(x[:, np.newaxis], s[np.newaxis, :])
    slices = s_low + (np.arange(n_slices) + 0.5) * (s_high - s_low) / n_slices
    return {"signal": s, "observation": x, "log_likelihood": np.asarray(log_p), "slice_signals": slices}


def _empirical_slices(pairs, slice_signals, window, edges):
    """Density (per count of x) of the observations whose signal lies within ``window`` of each slice.

    The density is normalised by all pairs in the band, so observations outside the edges lower it.
    """
    empty = [None] * len(slice_signals)
    if pairs is None:
        return {"observation_edges": edges, "empirical_density": empty,
                "pairs_per_slice": np.zeros(len(slice_signals), dtype=int)}
    signal, observation = pairs
    densities, counts = [], []
    for s in slice_signals:
        near = observation[np.abs(signal - s) <= window]
        counts.append(near.size)
        histogram = np.histogram(near, bins=edges)[0]
        densities.append(histogram / (near.size * np.diff(edges)) if near.size else None)
    return {"observation_edges": edges, "empirical_density": densities, "pairs_per_slice": np.array(counts)}


def _fit_history(model, name):
    """The model's ``fit_history`` as arrays, or None; malformed histories are a ValueError."""
    history = getattr(model, "fit_history", None)
    if history is None:
        return None
    if not isinstance(history, Mapping) or "loss" not in history:
        raise ValueError(f"fit_history of {name!r} must be a dict with a 'loss' list")
    checked = {"loss": np.asarray(history["loss"], dtype=np.float64).ravel()}
    if history.get("val_loss") is not None:
        checked["val_loss"] = np.asarray(history["val_loss"], dtype=np.float64).ravel()
        steps = history.get("val_step")
        checked["val_step"] = (np.arange(checked["val_loss"].size) if steps is None
                               else np.asarray(steps, dtype=np.float64).ravel())
        if checked["val_step"].size != checked["val_loss"].size:
            raise ValueError(f"fit_history of {name!r}: {checked['val_step'].size} val_step for "
                             f"{checked['val_loss'].size} val_loss values")
    return checked


def _reference_log_likelihood(reference, observation, signal):
    if isinstance(reference, NoiseModel):
        values = reference.log_likelihood(observation, signal)
    else:
        values = reference(observation, signal)
    values = np.asarray(values, dtype=np.float64)
    if values.shape != observation.shape:
        raise ValueError(f"reference returned shape {values.shape} for {observation.shape} pairs")
    return values
