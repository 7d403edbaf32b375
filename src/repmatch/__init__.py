"""repmatch: how similar two pieces of training data are from a model's point of view."""

__version__ = "0.1.0"
