"""Which attachments are audio, and fetching them within the configured limits."""

from __future__ import annotations

import asyncio
from pathlib import PurePosixPath

import aiohttp
import discord

from ser_engine.errors import AudioTooLargeError, AudioTooLongError

from ..common import UserFacingError

__all__ = [
    "AUDIO_EXTENSIONS",
    "UserFacingError",
    "NotAudioError",
    "NoAudioInMessageError",
    "DownloadError",
    "is_audio",
    "audio_attachments",
    "check_attachment",
    "download",
]

#: File extensions taken as audio when Discord reports no ``audio/*`` content type.
AUDIO_EXTENSIONS = frozenset(
    {".ogg", ".oga", ".opus", ".mp3", ".wav", ".flac", ".m4a", ".aac", ".aif", ".aiff", ".wma", ".weba"}
)


class NotAudioError(UserFacingError):
    """The attachment is not an audio file."""

    def __init__(self, filename: str) -> None:
        shown = discord.utils.escape_markdown(filename[:80])
        super().__init__(f"`{shown}` is not an audio file. Send a voice message or an audio file (ogg, mp3, wav ...).")


class NoAudioInMessageError(UserFacingError):
    """A message picked from the context menu holds no audio attachment."""

    def __init__(self) -> None:
        super().__init__("That message has no voice message or audio file to analyse.")


class DownloadError(UserFacingError):
    """The attachment could not be fetched from Discord."""


def is_audio(attachment: discord.Attachment) -> bool:
    """Whether ``attachment`` looks like audio: an ``audio/*`` content type or a known audio extension.

    Voice messages (``audio/ogg``, Opus) always qualify.
    """
    content_type = (attachment.content_type or "").split(";", 1)[0].strip().lower()
    if content_type.startswith("audio/"):
        return True
    return PurePosixPath(attachment.filename.lower()).suffix in AUDIO_EXTENSIONS


def audio_attachments(message: discord.Message) -> list[discord.Attachment]:
    """The audio attachments of ``message``, in order."""
    return [a for a in message.attachments if is_audio(a)]


def check_attachment(attachment: discord.Attachment, *, max_bytes: int, max_duration_s: float) -> None:
    """Refuse an attachment before downloading it.

    Parameters
    ----------
    attachment : discord.Attachment
        Its ``size`` (bytes) and, for voice messages, ``duration`` (seconds)
        are the values Discord reports.
    max_bytes : int
        Largest accepted size in bytes.
    max_duration_s : float
        Longest accepted duration in seconds.

    Raises
    ------
    NotAudioError
        Not audio by content type or extension.
    ser_engine.errors.AudioTooLargeError
        ``attachment.size > max_bytes``.
    ser_engine.errors.AudioTooLongError
        The reported duration exceeds ``max_duration_s``.
    """
    if not is_audio(attachment):
        raise NotAudioError(attachment.filename)
    if attachment.size > max_bytes:
        raise AudioTooLargeError(attachment.size, max_bytes)
    if attachment.duration is not None and attachment.duration > max_duration_s:
        raise AudioTooLongError(attachment.duration, max_duration_s)


async def download(attachment: discord.Attachment, *, max_bytes: int, timeout_s: float) -> bytes:
    """Fetch an attachment's bytes from Discord's CDN.

    Parameters
    ----------
    attachment : discord.Attachment
        The (already checked) attachment.
    max_bytes : int
        Largest accepted body in bytes (checked again on what arrived).
    timeout_s : float
        Wall-clock limit of the download in seconds.

    Raises
    ------
    DownloadError
        Timeout, HTTP error or network failure.
    ser_engine.errors.AudioTooLargeError
        The body is larger than ``max_bytes``.
    """
    try:
        data = await asyncio.wait_for(attachment.read(), timeout=timeout_s)
    except asyncio.TimeoutError:
        raise DownloadError("Downloading that file from Discord took too long; please try again.") from None
    except (discord.HTTPException, aiohttp.ClientError) as exc:
        raise DownloadError("I couldn't download that file from Discord; please try again.") from exc
    if len(data) > max_bytes:
        raise AudioTooLargeError(len(data), max_bytes)
    return data
