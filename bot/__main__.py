"""Run the bot: ``python -m bot`` or the ``ser-bot`` console script."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from .config import Settings

__all__ = ["main"]

log = logging.getLogger("bot")

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG, EXIT_MODEL = 0, 1, 2, 3

MISSING_TOKEN = (
    "DISCORD_TOKEN is not set. Set DISCORD_TOKEN in the environment or in a .env file "
    "in the working directory (see .env.example), then start the bot again."
)


#: glibc's ``mallopt`` parameter number of ``M_ARENA_MAX`` (``<malloc.h>``: ``#define M_ARENA_MAX -8``).
_M_ARENA_MAX = -8
#: Malloc arenas the bot process may use (glibc's default is 8 per core). Measured with
#: ``SER_WORKER_MODE=thread`` over 200 analyses (benchmarks.bot_e2e): peak RSS 239 -> 228 MB, no slower.
MALLOC_ARENAS = 2


def _limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas (as ``MALLOC_ARENA_MAX`` would) unless the environment already sets it.

    Every thread that allocates gets its own arena (up to 8 per core), and
    memory freed in one arena is not reused by another: analysis and
    database threads each keep their own high-water mark.  Must run before
    those threads start.

    Returns
    -------
    bool
        Whether the limit was set (False on other C libraries, or when
        ``MALLOC_ARENA_MAX`` is set in the environment).
    """
    import ctypes
    import ctypes.util
    import os

    if os.environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(ctypes.c_int(_M_ARENA_MAX), ctypes.c_int(arenas)))
    except (OSError, AttributeError):  # not glibc
        return False


def _load_settings() -> Settings | None:
    """Read the settings; print a helpful message (never a value) and return ``None`` if invalid."""
    try:
        return Settings()  # type: ignore[call-arg]  # fields come from the environment
    except ValidationError as exc:
        problems = exc.errors(include_input=False, include_url=False)
        if any(err["loc"] == ("discord_token",) for err in problems):
            print(f"ser-bot: {MISSING_TOKEN}", file=sys.stderr)
        others = [err for err in problems if err["loc"] != ("discord_token",)]
        for err in others:
            name = "_".join(str(part) for part in err["loc"]).upper()
            print(f"ser-bot: invalid {name}: {err['msg']}", file=sys.stderr)
        return None


def _model_problem(settings: Settings) -> str | None:
    """Verify ``SER_MODEL_PATH`` before anything talks to Discord.

    Loads the bundle as the bot will (:func:`ser_engine.bundle.load_bundle`:
    SHA-256 of the ``.joblib`` against its sidecar, library and feature
    versions), so a missing, truncated or altered model stops the bot before
    it logs in.

    Returns
    -------
    str or None
        ``None`` if the bundle loads, else a one-line reason for the user.
    """
    from ser_engine.bundle import load_bundle
    from ser_engine.errors import ModelError

    try:
        load_bundle(settings.ser_model_path)
    except ModelError as exc:
        reason = exc.user_message
    except Exception as exc:  # a bundle that passed its hash but does not unpickle here
        reason = f"{settings.ser_model_path} could not be read ({type(exc).__name__})"
    else:
        return None
    return " ".join(reason.split())


#: Seconds the shutdown may take after SIGINT/SIGTERM before the process exits anyway. Issue 13 asks
#: for a stop within 10 s; the last second is left to the interpreter's own exit. A clean shutdown of
#: the burst in tests/test_bot_load.py took 1.7-3.0 s.
SHUTDOWN_BUDGET_S = 9.0


def _exit_now(code: int) -> None:
    """Flush the logs and end the process at once (no further clean-up can hang it)."""
    logging.shutdown()
    os._exit(code)


async def _run(settings: Settings) -> None:
    """Start the bot and run until Discord closes the connection or SIGINT/SIGTERM arrives.

    After the first signal the bot closes (:meth:`bot.client.SERBot.close`)
    within :data:`SHUTDOWN_BUDGET_S` or the process exits with status 1; a
    second signal during the shutdown exits at once with status 1.
    """
    from .client import make_bot

    bot = make_bot(settings)  # sharded when SHARD_COUNT is set
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)

    def again() -> None:
        log.warning("second stop signal: exiting now")
        _exit_now(EXIT_FAILURE)

    for sig in signals:
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-POSIX
            pass
    async with bot:
        runner = asyncio.create_task(bot.start(settings.discord_token.get_secret_value()))
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if runner in done:
            stopper.cancel()
            runner.result()  # re-raise a start-up failure
            return
        log.info("shutting down")
        for sig in signals:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, again)
        closing = asyncio.create_task(bot.close())
        try:
            await asyncio.wait_for(asyncio.shield(closing), SHUTDOWN_BUDGET_S)
        except TimeoutError:
            log.error("shutdown did not finish within %.0f s; exiting now", SHUTDOWN_BUDGET_S)
            _exit_now(EXIT_FAILURE)
        await runner


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ser-bot`` / ``python -m bot``.

    Parameters
    ----------
    argv : sequence of str, optional
        Command-line arguments (only ``--help``); configuration comes from the
        environment and ``.env``.

    Returns
    -------
    int
        0 after a clean shutdown, 1 if the bot could not start or run,
        2 if the configuration is missing or invalid, 3 if the model bundle
        (``SER_MODEL_PATH``) is missing, altered or incompatible -- checked
        before connecting to Discord.
    """
    argparse.ArgumentParser(
        prog="ser-bot",
        description="Discord bot that detects the emotion in voice notes. "
        "Configure it with environment variables or a .env file (see .env.example).",
    ).parse_args(argv)
    _limit_malloc_arenas()
    settings = _load_settings()
    if settings is None:
        return EXIT_CONFIG

    from .logging_setup import configure_logging

    configure_logging(settings.log_level, secrets=[settings.discord_token.get_secret_value()])

    if settings.ser_worker_mode == "process":
        # The worker processes' forkserver imports the engine while this process goes on.
        from ser_engine.service import prestart_process_workers

        prestart_process_workers()

    problem = _model_problem(settings)
    if problem is not None:
        print(f"ser-bot: cannot load the model: {problem}", file=sys.stderr)
        return EXIT_MODEL

    import discord

    from ser_engine.errors import ModelError, SERError

    try:
        asyncio.run(_run(settings))
    except KeyboardInterrupt:
        return EXIT_OK
    except discord.LoginFailure:
        log.error("Discord refused DISCORD_TOKEN; copy the bot token again from the developer portal")
        return EXIT_FAILURE
    except discord.PrivilegedIntentsRequired:
        log.error("enable the Message Content intent for this bot in the Discord developer portal (Bot tab)")
        return EXIT_FAILURE
    except ModelError as exc:  # e.g. the bundle changed after the check above
        log.error("cannot load the model: %s", exc.user_message)
        return EXIT_MODEL
    except SERError as exc:
        log.error("cannot start: %s", exc.user_message)
        return EXIT_FAILURE
    except Exception:
        log.exception("the bot stopped on an unexpected error")
        return EXIT_FAILURE
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
