"""TensorRT backend (TensorRT 8.6 / 10.x / 11.x and TensorRT-RTX, one code path).

Heavy imports (tensorrt, pycuda, cuda-python) happen inside functions only.
"""

from segdeploy.backends.tensorrt.builder import EngineOptions, build_engine
from segdeploy.backends.tensorrt.flavour import Flavour, load_tensorrt
from segdeploy.backends.tensorrt.profiles import parse_shapes, resolve_profile
from segdeploy.backends.tensorrt.runner import TrtRunner, check_compatible

__all__ = ["EngineOptions", "Flavour", "TrtRunner", "build_engine", "check_compatible", "load_tensorrt", "parse_shapes", "resolve_profile"]
