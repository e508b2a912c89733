"""vitprint: find which real medical images were used to train a generative model."""

__version__ = "0.1.0"

from vitprint.api import DetectionResult, detect  # noqa: E402
from vitprint.membership import available_detectors, create_detector, register_detector  # noqa: E402
from vitprint.models.presets import model_config  # noqa: E402
from vitprint.training.autoencoder import train_autoencoder  # noqa: E402

__all__ = ["DetectionResult", "__version__", "available_detectors", "create_detector", "detect", "model_config",
           "register_detector", "train_autoencoder"]
