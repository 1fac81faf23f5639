"""One error hierarchy. The CLI turns any of these into a single line on stderr and exit status 2.

Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class VramwiseError(Exception):
    """Base of every error the user can cause with their input."""


class ConfigError(VramwiseError):
    """A config.json (or catalog entry) is missing, malformed, or has an invalid field."""


class UnknownModelError(VramwiseError):
    """A model name is neither in the catalog, nor a path, nor a bare size."""


class UnsupportedArchitectureError(VramwiseError):
    """The config's model_type has no adapter."""


class InvalidWorkloadError(VramwiseError):
    """A batch, context, dtype, format or other setting is out of range."""


class InvalidLayoutError(VramwiseError):
    """A parallel layout that cannot be built (tp not dividing heads, ...)."""


class UnknownGpuError(VramwiseError):
    """A GPU name that is not in the catalog."""


class NeedsArchitectureError(VramwiseError):
    """A term needs the architecture but only a bare parameter count was given."""
