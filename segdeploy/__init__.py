"""segdeploy: PyTorch semantic-segmentation models to TensorRT / onnxruntime, verified."""

__version__ = "0.1.0"

__all__ = ["__version__"]
