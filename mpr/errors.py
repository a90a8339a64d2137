"""MPR's exceptions: one flat hierarchy. Every message is safe to show to a user."""

from __future__ import annotations


class MprError(Exception):
    """Base class; its message is safe to show to a user."""


class ConfigError(MprError):
    """A setting is missing or has a bad value (the message names the variable)."""


class PluginError(MprError):
    """A plugin is missing, registers something twice, or breaks its contract."""


class NotFound(MprError):
    """An asset, preset, job or storage key does not exist."""


class ValidationError(MprError):
    """User input (preset values, trim times, output names, ids) is invalid."""


class InvalidTransition(MprError):
    """A job cannot move from its current status to the requested one."""


class StorageError(MprError):
    """A storage key is unsafe, or the storage backend failed."""


class ProbeError(MprError):
    """A media file could not be read (corrupt, truncated, not media)."""


class FFmpegError(MprError):
    """ffmpeg exited with an error; carries its return code and the last stderr lines."""

    def __init__(self, message: str, returncode: int | None = None, stderr_tail: str = "") -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stderr_tail = stderr_tail


class ExecutorError(MprError):
    """An executor could not submit, cancel or poll a job."""


class AuthError(MprError):
    """Missing or wrong credentials, or a bad callback signature."""
