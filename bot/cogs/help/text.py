"""Every user-facing string of the help cog, in one place (so it can be translated as a whole).

Placeholders use :meth:`str.format` names; nothing here is built by concatenation.
"""

from __future__ import annotations

__all__ = [
    "JOIN_MESSAGE",
    "HELP_TITLE",
    "HELP_INTRO",
    "HELP_COMMANDS",
    "HELP_NO_COMMANDS",
    "HELP_PRIVACY",
    "HELP_PRIVACY_TEXT",
    "HELP_PRIVACY_LINK",
    "HELP_FOOTER",
    "HELP_DESCRIPTION",
    "HELP_CONTEXT_MENU",
]

#: Posted once, in the system channel, when the bot joins a server (at most 2000 characters).
JOIN_MESSAGE = (
    "Hi! I estimate the emotion in voice messages from the voice alone.\n"
    "**Automatic analysis is off in this server** until someone with Manage Server turns it on with "
    "`/settings analysis enabled:True` (`/settings show` shows every setting).\n"
    "Anyone can use `/emotion` on their own recording, and everyone can see what is stored or opt out "
    "with `/privacy` (`/privacy optout`). `/help` lists what you can do."
)

HELP_DESCRIPTION = "What this bot does, the commands you may use, and how your data is handled"
HELP_TITLE = "Speech-emotion bot"
HELP_INTRO = (
    "I estimate the emotion in a voice message from the voice alone (a model trained on acted English "
    "speech; it can be wrong). Send me a voice message by direct message, use `/emotion` on a recording, "
    "or right-click a message → Apps → **Detect emotion**. In a server, voice messages are analysed "
    "automatically only where its managers turned it on."
)
HELP_COMMANDS = "Commands you can use here"
HELP_NO_COMMANDS = "None here."
HELP_PRIVACY = "Privacy"
HELP_PRIVACY_TEXT = (
    "No audio is ever stored. `/privacy show` shows what is stored about you, `/privacy delete` deletes it, "
    "and `/privacy optout` stops all analysis of your voice messages, everywhere."
)
#: Appended to :data:`HELP_PRIVACY_TEXT` when ``SER_PRIVACY_URL`` is set.
HELP_PRIVACY_LINK = "The full privacy text: {url}"
HELP_FOOTER = "Only you can see this message."
#: A message command, as listed by ``/help``.
HELP_CONTEXT_MENU = "Right-click a message → Apps → **{name}**"
