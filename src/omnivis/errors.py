"""The exceptions omnivis raises for bad input, each naming the problem in its message.

Every error a user can cause (an unreadable image, an unknown task, a checkpoint with a wrong tensor)
derives from `OmnivisError`, so a caller can catch one class; the CLI turns these into a one-line
message and a non-zero exit code instead of a stack trace.
"""


class OmnivisError(Exception):
    """Base class of every error omnivis raises on purpose."""


class InputError(OmnivisError, ValueError):
    """An argument given by the caller is invalid: an image, a task, a text or a region."""


class ImageError(InputError):
    """An image cannot be used: unreadable, truncated, empty, of a refused format, or too large."""


class CheckpointError(OmnivisError):
    """A checkpoint directory cannot be loaded: missing files, wrong tensors, unsafe pickles."""


class ParseError(OmnivisError, ValueError):
    """A generated sequence cannot be turned into a structured answer."""


class DatasetError(OmnivisError, ValueError):
    """A dataset cannot be read or written: a corrupt shard, a missing column, a record that breaks an
    invariant (an out-of-image box, a dangling id), or an image that does not decode."""


class ConfigError(InputError):
    """A training or recipe config is invalid: an unknown field, a wrongly typed or out-of-range value."""


class TrainingError(OmnivisError):
    """Training cannot go on: a non-finite loss, a diverged run, a checkpoint that does not fit the run."""
