"""Runtimes: each module is `build(...)` (an artifact in the deploy directory) plus a `Runner`.

Runners follow Polygraphy's small protocol: a context manager that activates (loads the
model), `infer({name: array}) -> {name: array}`, and deactivates (frees it).
"""

BACKENDS = ("onnxruntime", "tensorrt", "openvino")
