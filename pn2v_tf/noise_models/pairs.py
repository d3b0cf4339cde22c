"""(signal, observation) pairs, the data every noise model is built from.

``observation`` may hold n times as many images as ``signal``: observation image ``j`` pairs with
signal image ``j // n`` (e.g. one calibration mean for n noisy frames). One signal image may also
come without the leading axis.
"""

import numpy as np


def check_pairs(signal, observation):
    """Validate pairs; returns float64 arrays (M, ...) and (M * n, ...)."""
    signal = np.asarray(signal, dtype=np.float64)
    observation = np.asarray(observation, dtype=np.float64)
    if signal.size == 0 or observation.size == 0:
        raise ValueError("signal and observation must not be empty")
    if signal.shape[1:] != observation.shape[1:]:
        if signal.shape == observation.shape[1:]:
            signal = signal[np.newaxis]
        else:
            raise ValueError(f"signal {signal.shape} and observation {observation.shape} images differ in shape")
    if observation.shape[0] % signal.shape[0] != 0:
        raise ValueError(f"{observation.shape[0]} observations cannot be split evenly among "
                         f"{signal.shape[0]} signal images")
    for name, array in (("signal", signal), ("observation", observation)):
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name} contains NaN or inf values")
    return signal, observation


def flatten_pairs(signal, observation):
    """Pairs as two 1-D float64 arrays of equal length."""
    signal, observation = check_pairs(signal, observation)
    repeats = observation.shape[0] // signal.shape[0]
    return np.repeat(signal, repeats, axis=0).ravel(), observation.ravel()
