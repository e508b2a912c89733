"""Membership detectors (one file each under ``detectors/``), the registry, and decisions."""

from vitprint.membership.base import Detector, as_pixels
from vitprint.membership.registry import (
    available_detectors,
    create_detector,
    detector_class,
    register_detector,
)

__all__ = ["Detector", "as_pixels", "available_detectors", "create_detector", "detector_class", "register_detector"]
