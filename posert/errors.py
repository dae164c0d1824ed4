"""Errors that mean "this machine cannot run that", not "posert has a bug": the command line
prints their message (which says what is missing and how to get it) and exits with status 2
instead of a traceback."""

from __future__ import annotations


class BackendUnavailable(RuntimeError):
    """A backend's hardware or build is missing here: no CUDA GPU that torch can use, or a
    ``posert._C`` built without its CUDA kernels."""


class MissingDependency(ImportError):
    """An optional package is not installed (TensorRT, cuda-python, MediaPipe); the message names
    it and how to install it."""
