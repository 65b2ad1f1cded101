"""The engine's own error hierarchy.

Every error carries a short, user-readable message (``str(err)``) that a
front end such as the Discord bot may show as it is: no paths from the
server, no tracebacks, no library jargon.  The class tells a program what
happened; the message tells a person.
"""

from __future__ import annotations

__all__ = [
    "SERError",
    "AudioError",
    "EmptyAudioError",
    "AudioTooLargeError",
    "AudioTooLongError",
    "AudioTooShortError",
    "AudioFormatLimitError",
    "UndecodableAudioError",
    "SilentAudioError",
    "NoSpeechError",
    "ModelError",
    "ModelNotFoundError",
    "ModelIntegrityError",
    "ModelCompatibilityError",
    "CorpusError",
    "ServiceError",
    "ServiceBusyError",
    "ServiceTimeoutError",
    "ServiceClosedError",
]


class SERError(Exception):
    """Base class of every error that :mod:`ser_engine` raises on purpose.

    Parameters
    ----------
    message : str
        A short sentence fit to show an end user.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def user_message(self) -> str:
        """The message to show an end user (same as ``str(err)``)."""
        return self.message


# --------------------------------------------------------------------- audio
class AudioError(SERError):
    """The input audio cannot be analysed."""


class EmptyAudioError(AudioError):
    """The input holds no bytes, or no samples after decoding."""


class AudioTooLargeError(AudioError):
    """The input is larger than the configured byte limit.

    Attributes
    ----------
    size_bytes : int
        Size of the input in bytes.
    limit_bytes : int
        The configured limit in bytes.
    """

    def __init__(self, size_bytes: int, limit_bytes: int) -> None:
        self.size_bytes = size_bytes
        self.limit_bytes = limit_bytes
        super().__init__(
            f"That file is too big ({size_bytes / 2**20:.1f} MiB); "
            f"the limit is {limit_bytes / 2**20:.1f} MiB."
        )


class AudioTooLongError(AudioError):
    """The input lasts longer than the configured duration limit.

    Attributes
    ----------
    duration_s : float
        Duration of the input in seconds (may be a header's claim).
    limit_s : float
        The configured limit in seconds.
    """

    def __init__(self, duration_s: float, limit_s: float) -> None:
        self.duration_s = duration_s
        self.limit_s = limit_s
        super().__init__(
            f"That recording is too long ({duration_s:.0f} s); the limit is {limit_s:.0f} s."
        )


class AudioTooShortError(AudioError):
    """The input is shorter than the shortest clip the model can judge.

    Attributes
    ----------
    duration_s : float
        Duration of the input in seconds.
    limit_s : float
        The configured minimum in seconds.
    """

    def __init__(self, duration_s: float, limit_s: float) -> None:
        self.duration_s = duration_s
        self.limit_s = limit_s
        super().__init__(
            f"That recording is too short ({duration_s:.2f} s); "
            f"send at least {limit_s:.1f} s of speech."
        )


class AudioFormatLimitError(AudioError):
    """The input's sample rate, channel count or number of samples is over the configured limit.

    Refused from the header before decoding where the header states it, and
    while decoding otherwise (see :class:`ser_engine.audio.AudioLimits`).

    Attributes
    ----------
    quantity : {"sample rate", "channels", "samples"}
        What is over its limit: the sample rate in Hz, the number of
        channels, or the samples counted over all channels (frames x
        channels).
    value : int
        The input's value (for ``"samples"``: what the header states, or how
        many were decoded when decoding stopped).
    limit : int
        The configured limit.
    """

    def __init__(self, quantity: str, value: int, limit: int) -> None:
        self.quantity = quantity
        self.value = value
        self.limit = limit
        if quantity == "sample rate":
            message = f"That file's sample rate ({value:,} Hz) is above the {limit:,} Hz I accept."
        elif quantity == "channels":
            message = f"That file has {value:,} audio channels; I accept at most {limit:,}."
        else:
            message = (
                f"That recording holds too much audio data ({value / 1e6:.1f} million samples over all channels; "
                f"the limit is {limit / 1e6:.1f} million): send a shorter clip, or a mono one."
            )
        super().__init__(message)


class UndecodableAudioError(AudioError):
    """Neither the in-process decoder nor ffmpeg could read the input as audio."""


class SilentAudioError(AudioError):
    """The decoded audio holds no signal above the silence threshold.

    Attributes
    ----------
    level_dbfs : float
        Peak-normalised RMS level of the loudest frame in dBFS.
    """

    def __init__(self, level_dbfs: float) -> None:
        self.level_dbfs = level_dbfs
        super().__init__("That recording is silent: I could not hear any speech in it.")


class NoSpeechError(AudioError):
    """The voice-activity detector found no speech in the audio (a tone, music, noise...).

    Attributes
    ----------
    speech_s : float
        Seconds of speech the detector found (below its minimum).
    min_speech_s : float
        The detector's minimum in seconds.
    """

    def __init__(self, speech_s: float = 0.0, min_speech_s: float = 0.0) -> None:
        self.speech_s = speech_s
        self.min_speech_s = min_speech_s
        super().__init__("I couldn't hear any speech in that recording.")


# --------------------------------------------------------------------- model
class ModelError(SERError):
    """A model bundle is missing, altered or incompatible."""


class ModelNotFoundError(ModelError):
    """No model bundle exists at the given path."""


class ModelIntegrityError(ModelError):
    """The bundle's SHA-256 differs from the one recorded when it was written."""


class ModelCompatibilityError(ModelError):
    """The bundle was written by incompatible library or feature versions."""


# -------------------------------------------------------------------- corpus
class CorpusError(SERError):
    """A corpus folder is missing, empty or not laid out as expected."""


# ------------------------------------------------------------------- service
class ServiceError(SERError):
    """The asynchronous analysis service could not serve a request."""


class ServiceBusyError(ServiceError):
    """Too many analyses are pending; the caller should try again later."""

    def __init__(self, message: str = "I'm busy analysing other voice notes; please try again in a minute.") -> None:
        super().__init__(message)


class ServiceTimeoutError(ServiceError):
    """An analysis took longer than the per-request timeout."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        super().__init__(f"The analysis took too long (over {timeout_s:.0f} s); please try a shorter clip.")


class ServiceClosedError(ServiceError):
    """The service has been shut down."""

    def __init__(self, message: str = "The analysis service is shutting down; please try again shortly.") -> None:
        super().__init__(message)
