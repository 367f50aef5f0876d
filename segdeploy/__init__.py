"""segdeploy: PyTorch semantic-segmentation models to TensorRT / onnxruntime, verified."""

from segdeploy.version import __version__

__all__ = ["Segmenter", "__version__"]


def __getattr__(name: str):
    # Lazy: `import segdeploy` stays light; Segmenter pulls in numpy/onnxruntime when used.
    if name == "Segmenter":
        from segdeploy.runtime import Segmenter

        return Segmenter
    raise AttributeError(f"module 'segdeploy' has no attribute {name!r}")
