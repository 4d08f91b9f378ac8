"""K-image mixing augmentation research: DCutMix, DMixup and their baselines."""

__version__ = "0.1.0"
