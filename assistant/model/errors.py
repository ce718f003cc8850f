"""The model layer's errors: one base class, so callers can catch the layer as a whole."""


class ModelError(Exception):
    """Anything that stops a model from being prepared or loaded."""


class UnsupportedModelError(ModelError):
    """The file is a valid GGUF, but of an architecture or layout this project cannot run."""


class CorruptModelError(ModelError):
    """The file is not a readable GGUF (bad magic, truncated, inconsistent tensors)."""


class ModelNotFoundError(ModelError):
    """No prepared model folder (or a folder without a valid manifest) at the given path."""
