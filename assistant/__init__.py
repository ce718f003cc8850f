"""Edge Assistant: a local AI assistant for Home Assistant, served over MQTT."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edge-assistant")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
