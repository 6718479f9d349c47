"""The local console: talk to the character in a terminal, or drive it from a script through a pipe.

Interactive use shows a prompt; piped use prints exactly one line per reply and exits at end of input, so tests and
scripts can read the answers line by line. Lines starting with `/` are commands.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

from bot.config import ConsoleConfig
from cogs.chat.service import ChatMessage, ChatService, Outcome

CONVERSATION_ID = "console:local"
CHANNEL_ID = "local"
AUTHOR_ID = "local"
MAX_PENDING_LINES = 256  # lines read ahead of the character; the reader thread waits beyond that

Handler = Callable[[str], Awaitable[str | Sequence[str] | None]]


@dataclass(frozen=True)
class ConsoleCommand:
    name: str
    usage: str
    help: str
    handler: Handler
    # Lines without a "/" that this command takes instead of the chat (e.g. a bare "2" while a story vote is open).
    bare: Callable[[str], bool] | None = None


class _Quit(Exception):
    pass


class Console:
    def __init__(
        self,
        *,
        chat: ChatService,
        config: ConsoleConfig,
        commands: Sequence[ConsoleCommand] = (),
        stdin: TextIO = sys.stdin,
        stdout: TextIO = sys.stdout,
    ) -> None:
        self._chat = chat
        self._config = config
        self._in = stdin
        self._out = stdout
        self._interactive = stdin.isatty() and stdout.isatty()
        builtin = [
            ConsoleCommand("help", "/help", "list the commands", self._help),
            ConsoleCommand("reset", "/reset", "forget this conversation and start over", self._reset),
            ConsoleCommand("quit", "/quit", "leave the console", self._quit),
        ]
        self._commands = {c.name: c for c in [*builtin, *commands]}

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Greet, then answer line by line until /quit, end of input or `stop`."""
        stop = stop or asyncio.Event()
        lines: asyncio.Queue[str | None] = asyncio.Queue(MAX_PENDING_LINES)
        loop = asyncio.get_running_loop()
        threading.Thread(
            target=self._read_lines, args=(loop, lines), name="console-stdin", daemon=True
        ).start()
        self._say(self._chat.card.name, self._chat.greeting(self._config.user_name))
        if self._interactive:
            self._write("(type /help for commands, /quit to leave)")
        stop_task = asyncio.create_task(stop.wait())
        try:
            while True:
                if self._interactive:
                    self._out.write(f"{self._config.user_name}> ")
                    self._out.flush()
                get = asyncio.create_task(lines.get())
                done, _ = await asyncio.wait({get, stop_task}, return_when=asyncio.FIRST_COMPLETED)
                # Stopping: answer no further line, not even one already read.
                if get not in done or stop.is_set():
                    get.cancel()
                    return
                line = get.result()
                if line is None:
                    return
                try:
                    await self.handle_line(line)
                except _Quit:
                    return
        finally:
            stop_task.cancel()

    async def handle_line(self, line: str) -> None:
        text = line.strip()
        if not text:
            return
        if text.startswith("/"):
            name, _, args = text[1:].partition(" ")
            command = self._commands.get(name.lower())
            if command is None:
                self._write(f"Unknown command /{name}. Type /help for the list.")
                return
            result = await command.handler(args.strip())
            if result is None:
                return
            for out in [result] if isinstance(result, str) else result:
                self._write(out)
            return
        for command in self._commands.values():
            if command.bare is not None and command.bare(text):
                result = await command.handler(text)
                for out in [] if result is None else [result] if isinstance(result, str) else result:
                    self._write(out)
                return
        reply = await self._chat.respond(
            ChatMessage(
                platform="console",
                conversation_id=CONVERSATION_ID,
                channel_id=CHANNEL_ID,
                author_id=AUTHOR_ID,
                author_name=self._config.user_name,
                content=text,
            ),
            cooldown=False,
        )
        if reply.outcome is Outcome.IGNORED or not reply.text:  # a flagged message may get no answer
            return
        if reply.note:
            self._write(reply.note)
        self._say(self._chat.card.name, reply.text)
        await self._chat.record_sent(reply, platform_message_id=None)

    # ----------------------------------------------------------------------------------------------- commands
    async def _help(self, _: str) -> list[str]:
        return ["Commands:", *(f"  {c.usage:<28} {c.help}" for c in self._commands.values())]

    async def _reset(self, _: str) -> str:
        await self._chat.reset(CONVERSATION_ID, platform="console", channel_id=CHANNEL_ID)
        return "(conversation forgotten)"

    async def _quit(self, _: str) -> None:
        raise _Quit

    # ----------------------------------------------------------------------------------------------- output
    def _say(self, name: str, text: str) -> None:
        if not self._interactive:
            text = " ".join(text.split())  # one reply, one line: scripts read replies line by line
        self._write(f"{name}: {text}")

    def _write(self, text: str) -> None:
        self._out.write(text + "\n")
        self._out.flush()

    def _read_lines(self, loop: asyncio.AbstractEventLoop, lines: asyncio.Queue[str | None]) -> None:
        # A daemon thread: a blocking readline must never keep the process alive after a stop signal.
        while True:
            try:
                line = self._in.readline()
            except (OSError, ValueError):
                line = ""
            item = line if line else None
            future = asyncio.run_coroutine_threadsafe(lines.put(item), loop)
            try:
                future.result()
            except Exception:  # the loop is gone: nobody is listening any more
                return
            if item is None:
                return
