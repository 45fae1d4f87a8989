"""Inference: tokenisation, the onnxruntime session, micro-batching, span decoding, language and routing."""
