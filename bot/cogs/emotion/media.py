"""Which attachments are audio, and fetching them within the configured limits.

Downloads are streamed under a byte cap that no response header can raise
(:func:`download`), and all of a bot's downloads go through one
:class:`Downloader`, which bounds how many run at once.
"""

from __future__ import annotations

import asyncio
from pathlib import PurePosixPath

import aiohttp
import discord

from ser_engine.errors import AudioTooLargeError, AudioTooLongError, ServiceBusyError

from ..common import UserFacingError

__all__ = [
    "AUDIO_EXTENSIONS",
    "UserFacingError",
    "NotAudioError",
    "NoAudioInMessageError",
    "DownloadError",
    "DownloadTimeoutError",
    "LargerThanDeclaredError",
    "is_audio",
    "audio_attachments",
    "check_attachment",
    "download",
    "Downloader",
    "CHUNK_BYTES",
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
    """The attachment could not be fetched from Discord (HTTP error or network failure).

    Parameters
    ----------
    message : str, optional
        Shown to the user.
    """

    def __init__(self, message: str = "I couldn't download that file from Discord; please try again.") -> None:
        super().__init__(message)


class DownloadTimeoutError(DownloadError):
    """The download took longer than ``SER_DOWNLOAD_TIMEOUT_S``."""

    def __init__(self) -> None:
        super().__init__("Downloading that file from Discord took too long; please try again.")


class LargerThanDeclaredError(DownloadError):
    """The CDN sent (or announced) more bytes than the attachment's declared size; the download was cut off."""

    def __init__(self) -> None:
        super().__init__(
            "That file from Discord is larger than Discord said it is, "
            "so I stopped downloading it and didn't analyse it."
        )


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


#: Bytes read from the CDN per step of a streamed download (the cap is checked after each step).
CHUNK_BYTES = 64 * 1024


async def download(
    attachment: discord.Attachment,
    *,
    max_bytes: int,
    timeout_s: float,
    session: aiohttp.ClientSession | None = None,
    proxy: str | None = None,
    proxy_auth: aiohttp.BasicAuth | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> bytes:
    """Stream an attachment's bytes from Discord's CDN, cut off at a byte cap.

    The cap is ``min(attachment.size, max_bytes)``: the size Discord declared
    in the message, which :func:`check_attachment` already held against
    ``max_bytes``. ``Content-Length`` is never trusted to allow more: a body
    that announces more than the cap is refused before it is read, and a
    body without ``Content-Length`` (chunked or closed-delimited) or one
    larger than announced is read in ``chunk_bytes`` steps and dropped as
    soon as it passes the cap, so at most ``cap + chunk_bytes`` bytes are
    ever held. aiohttp decompresses a ``Content-Encoding`` body before the
    count, so the cap also bounds what a compressed body expands to.

    Parameters
    ----------
    attachment : discord.Attachment
        The (already checked) attachment; its ``url`` and ``size`` (bytes) are used.
    max_bytes : int
        Largest accepted body in bytes.
    timeout_s : float
        Wall-clock limit of the whole download in seconds.
    session : aiohttp.ClientSession, optional
        Session to use (a :class:`Downloader`'s); a temporary one otherwise.
    proxy, proxy_auth : optional
        HTTP proxy for the CDN (the bot's own ``discord.py`` proxy settings).
    chunk_bytes : int, optional
        Read step in bytes (default :data:`CHUNK_BYTES`).

    Returns
    -------
    bytes
        The whole body, at most ``min(attachment.size, max_bytes)`` bytes.

    Raises
    ------
    DownloadTimeoutError
        The download took longer than ``timeout_s``.
    LargerThanDeclaredError
        A body larger than ``attachment.size`` (announced or sent).
    DownloadError
        HTTP error or network failure (also a body shorter than its
        ``Content-Length``).
    ser_engine.errors.AudioTooLargeError
        ``attachment.size`` itself exceeds ``max_bytes`` (unchecked attachment).
    """
    if attachment.size > max_bytes:
        raise AudioTooLargeError(attachment.size, max_bytes)
    cap = max(0, attachment.size)
    own = session is None
    client = aiohttp.ClientSession() if session is None else session
    try:
        async with asyncio.timeout(timeout_s):
            async with client.get(attachment.url, proxy=proxy, proxy_auth=proxy_auth) as response:
                if response.status != 200:
                    raise DownloadError()
                if response.content_length is not None and response.content_length > cap:
                    raise LargerThanDeclaredError()
                body = bytearray()
                async for chunk in response.content.iter_chunked(chunk_bytes):
                    if len(body) + len(chunk) > cap:
                        raise LargerThanDeclaredError()
                    body += chunk
                return bytes(body)
    except TimeoutError:
        raise DownloadTimeoutError() from None
    except aiohttp.ClientError as exc:
        raise DownloadError() from exc
    finally:
        if own:
            await client.close()


class Downloader:
    """Every attachment download of the bot: one bound on how many run at once, each streamed under a cap.

    Parameters
    ----------
    max_concurrent : int
        Downloads running at once (``SER_MAX_DOWNLOADS``, >= 1); more wait for a slot.
    max_bytes : int
        Largest accepted body in bytes (``SER_MAX_BYTES``).
    timeout_s : float
        Seconds one download may take (``SER_DOWNLOAD_TIMEOUT_S``).
    max_wait_s : float, optional
        Seconds a download may wait for a slot (default ``timeout_s``); the
        bot passes ``SER_REQUEST_TIMEOUT_S``, the time an analysis may wait.
    proxy, proxy_auth : optional
        HTTP proxy for the CDN.

    Raises
    ------
    ValueError
        For a non-positive ``max_concurrent``, ``max_bytes``, ``timeout_s`` or ``max_wait_s``.
    """

    def __init__(
        self,
        *,
        max_concurrent: int,
        max_bytes: int,
        timeout_s: float,
        max_wait_s: float | None = None,
        proxy: str | None = None,
        proxy_auth: aiohttp.BasicAuth | None = None,
    ) -> None:
        max_wait_s = timeout_s if max_wait_s is None else max_wait_s
        if max_concurrent < 1 or max_bytes < 1 or timeout_s <= 0 or max_wait_s <= 0:
            raise ValueError("Downloader: max_concurrent, max_bytes, timeout_s and max_wait_s must be positive")
        self.max_concurrent = max_concurrent
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.max_wait_s = max_wait_s
        self.proxy = proxy
        self.proxy_auth = proxy_auth
        self._slots = asyncio.Semaphore(max_concurrent)
        self._session: aiohttp.ClientSession | None = None
        self._in_flight = 0
        self._running = 0

    @property
    def in_flight(self) -> int:
        """Downloads accepted and not finished (running or waiting for a slot)."""
        return self._in_flight

    @property
    def running(self) -> int:
        """Downloads holding a slot now (at most ``max_concurrent``)."""
        return self._running

    async def fetch(self, attachment: discord.Attachment) -> bytes:
        """Download ``attachment`` once a slot is free (see :func:`download`).

        Raises
        ------
        ser_engine.errors.ServiceBusyError
            No slot became free within ``max_wait_s``.
        DownloadError, ser_engine.errors.AudioTooLargeError
            As :func:`download`.
        """
        self._in_flight += 1
        try:
            try:
                async with asyncio.timeout(self.max_wait_s):
                    await self._slots.acquire()
            except TimeoutError:
                raise ServiceBusyError() from None
            self._running += 1
            try:
                if self._session is None or self._session.closed:
                    self._session = aiohttp.ClientSession()
                return await download(
                    attachment, max_bytes=self.max_bytes, timeout_s=self.timeout_s, session=self._session,
                    proxy=self.proxy, proxy_auth=self.proxy_auth,
                )  # fmt: skip
            finally:
                self._running -= 1
                self._slots.release()
        finally:
            self._in_flight -= 1

    async def close(self) -> None:
        """Close the HTTP session (a later :meth:`fetch` opens a new one)."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()
