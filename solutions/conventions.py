"""Re-export of :mod:`data_utils.conventions` (the single definition), so the
reference code can say ``from solutions.conventions import ...``.

The conventions live in ``data_utils`` because students get ``data_utils``
but never ``solutions``.
"""

from data_utils.conventions import BACKGROUND, FPN_STRIDES, IMAGE_SIZE, NEUTRAL, PADDING, Detections

__all__ = ["BACKGROUND", "FPN_STRIDES", "IMAGE_SIZE", "NEUTRAL", "PADDING", "Detections"]
