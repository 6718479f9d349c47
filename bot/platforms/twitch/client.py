"""The Twitch client: twitchio's `commands.Bot` built over the shared `Runtime`.

Start-up (inside twitchio's `login`): an app token from the client credentials, the bot's user token from our
database or the environment (`load_tokens`), the bot's own user, then `setup_hook` loads the feature modules listed
in `EXTENSIONS` and subscribes to EventSub chat in the configured channels. Every outbound chat message goes through
`self.pacer` (see pacing.py); features call `bot.pacer.submit(Job(...))` and never send directly.

The connection's state goes to `runtime.metrics` (the dashboard's status): connected at each EventSub welcome, lost
as soon as a socket drops (`liveness.ConnectionWatch`: twitchio itself says so only once the replacement is open),
stopped at `close`.

With `[safety] twitch_automod_check`, each line is first put to Twitch AutoMod (`automod.py`); a line it would not
permit is held (`pacing.MessageHeld`): recorded for moderators through `runtime.safety`, never posted, and a reply
is replaced by the character's deflection.

Tokens live only in our database (`add_token` / `event_token_refreshed` / `save_tokens` store them there;
`load_tokens` reads them back); twitchio's token file is never written. No token is ever logged or put in an error.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import twitchio
from twitchio import eventsub
from twitchio.ext import commands

from bot.platforms.twitch import automod
from bot.platforms.twitch.liveness import ConnectionWatch
from bot.platforms.twitch.pacing import Job, MessageHeld, OutboundPacer, PacerSettings, RateLimited
from bot.platforms.twitch.tokens import StoredToken, TokenVault, TwitchCredentials
from bot.store import StoreError
from bot.tasks import TaskTracker
from cogs.common.held import Place

if TYPE_CHECKING:
    from collections.abc import Iterator

    from twitchio.authentication import ValidateTokenPayload
    from twitchio.eventsub.websockets import Websocket, WebsocketClosed
    from twitchio.models.eventsub_ import WebsocketWelcome
    from twitchio.payloads import TokenRefreshedPayload

    from bot.platforms.twitch.pacing import Clock, Sleep
    from bot.runtime import Runtime

log = logging.getLogger(__name__)

PLATFORM: Final = "twitch"  # the name this client reports its connection under (`runtime.metrics`)

# Every Twitch feature module (with `async def setup(bot)`), in load order. A feature adds itself here only.
EXTENSIONS: tuple[str, ...] = (
    "cogs.chat.twitch_component",
    "cogs.privacy.twitch_component",
    "cogs.admin.twitch_component",
    "cogs.polls.twitch_component",
    "cogs.story.twitch_component",
    "cogs.teach.twitch_component",
)

REQUIRED_SCOPES = frozenset({"user:read:chat", "user:write:chat"})
# Chat, plus the moderation events that remove messages from our log.
CHAT_SUBSCRIPTIONS = (
    eventsub.ChatMessageSubscription,
    eventsub.ChatMessageDeleteSubscription,
    eventsub.ChatClearUserMessagesSubscription,
)


class TwitchLoginError(RuntimeError):
    """Twitch refused the credentials or the chat subscriptions; the message says what to fix, without secrets."""


class ChatMessageDropped(RuntimeError):
    """Twitch accepted the request but did not post the message (AutoMod, slow mode, ...)."""

    def __init__(self, code: str) -> None:
        super().__init__(f"Twitch dropped the message ({code})")
        self.code = code


class FamiliarTwitchBot(commands.Bot):
    def __init__(
        self,
        *,
        runtime: Runtime,
        credentials: TwitchCredentials,
        pacer_settings: PacerSettings | None = None,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
        extensions: Sequence[str] = EXTENSIONS,
        **options: Any,
    ) -> None:
        super().__init__(
            client_id=credentials.client_id,
            client_secret=credentials.client_secret,
            bot_id=credentials.bot_id,
            prefix="!",
            **options,
        )
        self.runtime = runtime
        self.settings = runtime.config.twitch
        self._credentials = credentials
        self._vault = TokenVault(runtime.store)
        self._extensions = tuple(extensions)
        pacer_options: dict[str, Any] = {}
        if clock is not None:
            pacer_options["clock"] = clock
        if sleep is not None:
            pacer_options["sleep"] = sleep
        settings = pacer_settings or PacerSettings(
            max_age_s=self.settings.max_reply_age_s, queue_per_channel=self.settings.queue_per_channel
        )
        self.pacer = OutboundPacer(self._send_chat, settings, on_held=self._held, **pacer_options)
        self._scopes: dict[str, frozenset[str]] = {}  # user id -> the scopes of the token held for them
        safety = runtime.config.safety
        self.automod = (
            automod.AutoModCheck(
                self._http, bot_id=credentials.bot_id, scopes_of=lambda u: self._scopes.get(u, frozenset())
            )
            if safety.enabled and safety.twitch_automod_check
            else None
        )
        self.handlers = TaskTracker("twitch")  # event handlers in flight; drained before disconnecting
        self.channels: dict[str, str] = {}  # broadcaster id -> login, for the channels we chat in
        self.bot_login = ""
        self._stopping = False  # set by `close`: a socket closing now is the shutdown, not an outage
        self._watch = ConnectionWatch(self._eventsub_sockets, self._report_connection)

    def __repr__(self) -> str:
        return f"FamiliarTwitchBot(bot_id={self._credentials.bot_id!r})"

    # ------------------------------------------------------------------------------------------------ start-up
    async def setup_hook(self) -> None:
        self.bot_login = (self.user.name or "").lower() if self.user else ""
        for module in self._extensions:
            await self.load_module(module)
        await self._subscribe_channels()

    async def _subscribe_channels(self) -> None:
        wanted = [c.strip().lstrip("#").lower() for c in self.settings.channels if c.strip()]
        try:
            users = await self.fetch_users(logins=wanted) if wanted else []
        except twitchio.HTTPException as exc:
            raise TwitchLoginError(f"Twitch did not answer the channel lookup (HTTP {exc.status})") from None
        found = {(u.name or "").lower(): u for u in users}
        for login in wanted:
            if login not in found:
                log.warning(
                    "Twitch: there is no channel named %r; check twitch.channels in the config", login
                )
        failures: list[str] = []
        for login, user in found.items():
            for kind in CHAT_SUBSCRIPTIONS:
                payload = kind(broadcaster_user_id=user.id, user_id=self.bot_id)
                try:
                    await self.subscribe_websocket(payload=payload)
                except twitchio.HTTPException as exc:
                    failures.append(f"{kind.type} in {login}: HTTP {exc.status}")
                    continue
                except twitchio.WebsocketConnectionException:
                    raise TwitchLoginError("could not connect to Twitch's EventSub websocket") from None
                if kind is eventsub.ChatMessageSubscription:
                    self.channels[user.id] = login
            if user.id == self.bot_id:
                self.pacer.set_elevated(user.id, True)  # the bot's own channel: it is the broadcaster
        for failure in failures:
            log.warning("Twitch: subscription refused: %s", failure)
        if not self.channels:
            raise TwitchLoginError(
                "Twitch chat is not available in any configured channel"
                + (f" ({'; '.join(failures)})" if failures else "")
                + ": check twitch.channels and the bot token's scopes (user:read:chat user:write:chat user:bot)"
            )
        log.info(
            "Twitch: chatting in %s as %s", ", ".join(sorted(self.channels.values())), self.bot_login or "?"
        )

    # ------------------------------------------------------------------------------------------------ tokens
    async def load_tokens(self, path: str | None = None, /) -> None:
        """The bot's token: the refreshed one from our database, unless the environment holds a newer pair."""
        c = self._credentials
        stored = await self._vault.load(c.bot_id)
        if stored is not None and stored.origin == c.fingerprint:
            await self.add_token(stored.token, stored.refresh)
        else:
            await self.add_token(c.token, c.refresh)
        if c.bot_id not in self.tokens:
            raise TwitchLoginError(
                f"the token in {c.env.bot_token_env} is not a user token for the bot account {c.env.bot_id_env}"
            )

    async def add_token(self, token: str, refresh: str) -> ValidateTokenPayload:
        c = self._credentials
        try:
            resp = await super().add_token(token, refresh)
        except twitchio.InvalidTokenException:
            raise TwitchLoginError(
                f"Twitch rejected the bot's user token ({c.env.bot_token_env}) and refreshing it with "
                f"{c.env.bot_refresh_token_env} failed: create a new token pair (docs/twitch.md)"
            ) from None
        except twitchio.HTTPException as exc:
            raise TwitchLoginError(f"Twitch could not check the bot's token (HTTP {exc.status})") from None
        if resp.user_id and resp.user_id != c.bot_id:
            self._http.remove_token(resp.user_id)
            raise TwitchLoginError(
                f"the token in {c.env.bot_token_env} belongs to {resp.login} (id {resp.user_id}), "
                f"but {c.env.bot_id_env} is {c.bot_id}: use the bot account's token and id"
            )
        missing = REQUIRED_SCOPES - set(resp.scopes or ())
        if resp.user_id and missing:
            raise TwitchLoginError(
                f"the token in {c.env.bot_token_env} lacks the scopes {' '.join(sorted(missing))}: "
                "authorize the bot account again with user:read:chat user:write:chat user:bot"
            )
        if resp.user_id:
            self._scopes[resp.user_id] = frozenset(resp.scopes or ())
            await self._store_token(resp.user_id)
        return resp

    async def event_token_refreshed(self, payload: TokenRefreshedPayload) -> None:
        log.info("Twitch: token for user %s refreshed; stored", payload.user_id)
        await self._store_token(payload.user_id)

    async def save_tokens(self, path: str | None = None, /) -> None:
        for user_id in list(self.tokens):
            await self._store_token(user_id)

    async def _store_token(self, user_id: str) -> None:
        data = self.tokens.get(user_id)
        if data is None:
            return
        token = StoredToken(
            user_id=user_id,
            token=data["token"],
            refresh=data["refresh"],
            origin=self._credentials.fingerprint,
        )
        try:
            await self._vault.save(token)
        except (
            StoreError
        ) as exc:  # the store closed first: the next start refreshes from the environment pair
            log.warning("Twitch: could not store the refreshed token: %s", exc)

    # ------------------------------------------------------------------------------------------------ sending
    async def _send_chat(self, channel_id: str, text: str, reply_to: str | None) -> str | None:
        """POST /helix/chat/messages as the bot (the pacer's send function), after AutoMod's word if asked for."""
        if self.automod is not None and not await self.automod.permits(channel_id, text):
            raise MessageHeld((automod.REASON,), automod.SOURCE)
        try:
            data = await self._http.post_chat_message(
                broadcaster_id=channel_id,
                sender_id=self.bot_id,
                message=text,
                token_for=self.bot_id,
                reply_to_message_id=reply_to,
            )
        except twitchio.HTTPException as exc:
            if exc.status == 429:
                raise RateLimited() from None
            raise
        sent = data["data"][0]
        if not sent.get("is_sent", True):
            reason = sent.get("drop_reason") or {}
            raise ChatMessageDropped(str(reason.get("code") or "unknown"))
        return sent.get("message_id")

    async def _held(self, job: Job, text: str, held: MessageHeld) -> None:
        """The pacer's hook for a line held back before posting: kept for moderators (never posted)."""
        place = Place("reply", PLATFORM, job.channel_id, job.author_id, job.author_login)
        await self.runtime.safety.hold(place, text, held.reasons, held.source)

    def chats_in(self, message: twitchio.ChatMessage) -> bool:
        """Whether a message was written in a channel we chat in (shared chat from another channel was not)."""
        return message.broadcaster.id in self.channels and message.source_broadcaster is None

    # ------------------------------------------------------------------------------------------------ events
    async def process_commands(
        self,
        payload: twitchio.ChatMessage
        | twitchio.ChannelPointsRedemptionAdd
        | twitchio.ChannelPointsRedemptionUpdate,
    ) -> None:
        """Every component's `!command` runs under `handlers`: a stop waits for it, and none starts while stopping."""
        with self.handlers.track() as accepted:
            if accepted:
                await super().process_commands(payload)

    async def event_command_error(self, payload: commands.CommandErrorPayload) -> None:
        if isinstance(payload.exception, commands.CommandNotFound):
            return  # "!something" for another bot, or handled by a listener (the chat command)
        await super().event_command_error(payload)

    async def event_error(self, payload: twitchio.EventErrorPayload) -> None:
        log.error(
            "Twitch: listener %s failed (%s)",
            getattr(payload.listener, "__qualname__", payload.listener),
            type(payload.error).__name__,
            exc_info=payload.error,
        )

    async def event_websocket_welcome(self, payload: WebsocketWelcome) -> None:
        """An EventSub socket is (re)connected; twitchio resubscribes a reconnected one by itself."""
        if self._stopping:
            return
        self._watch.welcomed()
        self._watch.start()  # from the first welcome on, a lost socket is reported within a check interval

    async def event_websocket_closed(self, payload: WebsocketClosed) -> None:
        """An EventSub socket closed: dropped (twitchio has just opened its replacement), retired, or shut down."""
        if self._stopping:
            self._report_connection(False, "stopped")
        else:
            self._watch.closed(payload.socket)

    async def close(self, **options: Any) -> None:
        self._stopping = True
        await self._watch.stop()
        await self.pacer.stop()
        await super().close(**options)
        self._report_connection(False, "stopped")

    def _eventsub_sockets(self) -> Iterator[Websocket]:
        # twitchio 3 keeps its EventSub sockets here (token owner -> session id -> socket) and has no public accessor;
        # `Websocket.connected` itself is public.
        for sockets in self._websockets.values():
            yield from sockets.values()

    def _report_connection(self, connected: bool, detail: str) -> None:
        self.runtime.metrics.platform(PLATFORM, connected=connected, detail=detail)


class _QuietStarlette(logging.Filter):
    """twitchio warns at every start that Starlette is missing; we use no web adapter at all."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "StarletteAdapter" not in record.getMessage()


logging.getLogger("twitchio.client").addFilter(_QuietStarlette())
