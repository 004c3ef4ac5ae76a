"""Hybrids (SPEC section 4): keep some global layers as the teacher's softmax attention.

Placement by rule (:mod:`.placement`) or by measured sensitivity (:mod:`.sensitivity` on a
calibration set from :mod:`.calibration`); the weights come from :mod:`.build`; :mod:`.run`
ties them together for `mmmamba hybridize`.
"""
from .build import hybrid_state
from .calibration import calibration_batches, calibration_items
from .placement import AUTO, PLACEMENTS, RULES, LayoutRequest, resolve_layers
from .run import DEFAULT_CALIB_SAMPLES, REPORT, choose_layers, hybridize_directory, student_config
from .sensitivity import attention_restored, layer_sensitivity, pick

__all__ = [
    "AUTO", "DEFAULT_CALIB_SAMPLES", "PLACEMENTS", "REPORT", "RULES", "LayoutRequest", "attention_restored",
    "calibration_batches", "calibration_items", "choose_layers", "hybrid_state",
    "hybridize_directory", "layer_sensitivity", "pick", "resolve_layers", "student_config",
]
