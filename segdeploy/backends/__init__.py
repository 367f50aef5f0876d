"""Runtimes: each is a build step (an artifact in the deploy directory) plus a `Runner`.

Runners follow Polygraphy's small protocol: a context manager that activates (loads the
model), `infer({name: array}) -> {name: array}`, and deactivates (frees it). Which backends
exist, and where each one's runner and build step live, is `registry.BACKENDS`.
"""
