"""vitprint: find which real medical images were used to train a generative model."""

__version__ = "0.1.0"
