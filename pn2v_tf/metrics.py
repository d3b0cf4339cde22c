"""Image quality: PSNR, and the scale-and-shift-invariant PSNR of the PN2V paper."""

import numpy as np


def psnr(ground_truth, image, data_range=None):
    """Peak signal-to-noise ratio in dB.

    Parameters
    ----------
    ground_truth, image : numpy.ndarray
        Arrays of the same shape.
    data_range : float or None
        Peak value range; default ``ground_truth.max() - ground_truth.min()``.
    """
    ground_truth, image = _pair(ground_truth, image)
    if data_range is None:
        data_range = float(ground_truth.max() - ground_truth.min())
    if data_range <= 0:
        raise ValueError("data_range must be positive (the ground truth is constant)")
    mse = float(np.mean((ground_truth - image) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(data_range ** 2 / mse)


def psnr_scale_invariant(ground_truth, image, data_range=None):
    """PSNR after the affine map ``a * image + b`` that best fits the ground truth (least squares).

    Used in the PN2V paper where predictions and ground truth may differ by gain and offset.
    """
    ground_truth, image = _pair(ground_truth, image)
    centred = image - image.mean()
    variance = float(np.mean(centred ** 2))
    scale = float(np.mean(centred * (ground_truth - ground_truth.mean()))) / variance if variance > 0 else 0.0
    fitted = scale * centred + ground_truth.mean()
    return psnr(ground_truth, fitted, data_range)


def _pair(ground_truth, image):
    ground_truth = np.asarray(ground_truth, dtype=np.float64)
    image = np.asarray(image, dtype=np.float64)
    if ground_truth.shape != image.shape:
        raise ValueError(f"ground truth {ground_truth.shape} and image {image.shape} differ in shape")
    return ground_truth, image
