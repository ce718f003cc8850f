"""Text generation on a prepared ONNX decoder: sampling, streaming text, batched decode."""
