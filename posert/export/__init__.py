"""PyTorch → ONNX export and verification."""
