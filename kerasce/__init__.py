"""kerasce: cross-entropy losses for Keras 3, and REINFORCE as the same loss weighted by the return."""

__version__ = "0.1.0"
