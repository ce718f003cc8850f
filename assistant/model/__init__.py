"""The runtime model layer: find and load prepared ONNX model folders (building them from a
GGUF is assistant.convert, an optional extra).

Nothing is re-exported here on purpose: importing `assistant.model.errors` (as the service
does) must not load the manager's tokenizers and jinja2 into the service process."""
