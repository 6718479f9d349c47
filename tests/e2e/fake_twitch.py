"""A fake Twitch (OAuth, the Helix routes the bot uses, and the EventSub websocket) on 127.0.0.1 for end-to-end tests.

The real twitchio client is pointed at it through `twitchio.http.Route.BASE` / `ID_BASE` and
`twitchio.eventsub.websockets.WSS` (see the `fake_twitch` fixture in tests/e2e/conftest.py). Tests drive chat by
injecting EventSub notifications (`send_chat`, `delete_message`, `clear_user`) and read what the bot sent from
`sent` (each with the `time.monotonic()` at which the request arrived). AutoMod's check
(`POST /helix/moderation/enforcements/status`) answers `is_permitted: false` for a text containing one of
`automod_holds`, and like Twitch wants a token with `moderation:read` whose user is the broadcaster.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import json
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

MAX_CHAT_CHARS = 500
KEEPALIVE_S = (
    10  # the keepalive_timeout_seconds twitchio asks for; the fake sends one every KEEPALIVE_EVERY_S
)
KEEPALIVE_EVERY_S = 2.0
POLL_S = 0.02  # `wait_until` also re-checks this often


def _now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")


@dataclass
class FakeUser:
    id: str
    login: str
    display_name: str = ""

    def as_helix(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "login": self.login,
            "display_name": self.display_name or self.login,
            "type": "",
            "broadcaster_type": "",
            "description": "",
            "profile_image_url": "https://example.invalid/p.png",
            "offline_image_url": "",
            "view_count": 0,
            "created_at": "2020-01-01T00:00:00Z",
        }


@dataclass
class SentChat:
    at: float  # time.monotonic() when the request arrived
    broadcaster_id: str
    sender_id: str
    message: str
    reply_parent_message_id: str | None
    message_id: str


@dataclass
class _Session:
    id: str
    ws: web.WebSocketResponse
    subscriptions: list[dict[str, Any]] = field(default_factory=list)
    keepalive: asyncio.Task[None] | None = None


class FakeTwitch:
    """One fake Twitch: app credentials, a bot account with a user token, channels, and an EventSub socket."""

    def __init__(
        self,
        *,
        client_id: str = "fake-client-id",
        client_secret: str = "fake-client-secret",
        bot: FakeUser | None = None,
        bot_token: str = "fake-bot-token-0123456789",
        bot_refresh: str = "fake-bot-refresh-0123456789",
        channels: list[FakeUser] | None = None,
        bot_scopes: tuple[str, ...] = (),
    ) -> None:
        """`bot_scopes`: scopes the bot's token has besides the chat ones (e.g. "moderation:read")."""
        self.client_id = client_id
        self.client_secret = client_secret
        self.bot = bot or FakeUser("900", "wickbot", "WickBot")
        self.channels = channels or [FakeUser("100", "streamer", "Streamer")]
        self.users: dict[str, FakeUser] = {u.id: u for u in (self.bot, *self.channels)}
        # access token -> validate answer; refresh token -> user id
        self.tokens: dict[str, dict[str, Any]] = {}
        self.refresh_tokens: dict[str, str] = {}
        self.add_user_token(bot_token, bot_refresh, self.bot.id, extra_scopes=bot_scopes)
        self.sent: list[SentChat] = []
        self.automod_holds: list[str] = []  # AutoMod's check refuses a text containing any of these
        self.automod_checks: list[tuple[str, str, bool]] = []  # (broadcaster id, text, permitted) per check
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request, in order
        self.subscriptions: list[dict[str, Any]] = []  # every subscription ever created
        self.fail_chat_with_429 = 0  # answer this many POST /chat/messages with 429 before accepting again
        self.chat_delay_s = 0.0
        self.sessions: dict[str, _Session] = {}
        self.connections = 0
        self.refuse_sockets = False  # an outage: EventSub socket requests are answered 503
        self.refused_sockets = 0
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.changed = asyncio.Event()  # set on every change of sessions, subscriptions or sent messages

    # ------------------------------------------------------------------------------------------------- lifecycle
    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/oauth2/validate", self._validate)
        app.router.add_post("/oauth2/token", self._token)
        app.router.add_get("/helix/users", self._users)
        app.router.add_post("/helix/eventsub/subscriptions", self._subscribe)
        app.router.add_post("/helix/chat/messages", self._chat)
        app.router.add_post("/helix/moderation/enforcements/status", self._automod_status)
        app.router.add_get("/ws", self._ws)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def close(self) -> None:
        for session in list(self.sessions.values()):
            await self._end_session(session)
        if self._runner is not None:
            await self._runner.cleanup()

    # --------------------------------------------------------------------------------------------- test controls
    def add_user_token(
        self,
        token: str,
        refresh: str,
        user_id: str,
        *,
        expires_in: int = 14_000,
        extra_scopes: tuple[str, ...] = (),
    ) -> None:
        scopes = ["user:read:chat", "user:write:chat", "user:bot", *extra_scopes]
        self.tokens[token] = {
            "client_id": self.client_id,
            "login": self.users[user_id].login,
            "user_id": user_id,
            "scopes": scopes,
            "expires_in": expires_in,
        }
        self.refresh_tokens[refresh] = user_id

    def revoke(self, token: str) -> None:
        self.tokens.pop(token, None)

    async def wait_until(self, predicate: Callable[[], bool], *, within: float = 10.0) -> None:
        """Wait until `predicate()` holds: checked on every change here (sockets, subscriptions, sent messages)."""
        async with asyncio.timeout(within):
            while not predicate():
                self.changed.clear()
                with contextlib.suppress(TimeoutError):  # the bot's own state changes without a sign here
                    await asyncio.wait_for(self.changed.wait(), POLL_S)

    async def wait_connected(self, sessions: int = 1, *, within: float = 10.0) -> None:
        """Wait until `sessions` sockets are open and each has its chat subscription."""

        def connected() -> bool:
            subscribed = (
                any(s["type"] == "channel.chat.message" for s in x.subscriptions)
                for x in self.sessions.values()
            )
            return len(self.sessions) >= sessions and all(subscribed)

        await self.wait_until(connected, within=within)

    async def wait_sent(self, count: int, *, within: float = 10.0) -> list[SentChat]:
        await self.wait_until(lambda: len(self.sent) >= count, within=within)
        return self.sent

    async def send_chat(
        self,
        text: str,
        *,
        channel: FakeUser | None = None,
        user_id: str = "501",
        login: str = "viewer",
        display_name: str | None = None,
        badges: list[str] = (),  # type: ignore[assignment]
        reply_to: SentChat | dict[str, str] | None = None,
        mention_bot: bool | None = None,
        message_id: str | None = None,
    ) -> str:
        """Deliver `channel.chat.message` to every subscribed session; returns the message id."""
        channel = channel or self.channels[0]
        message_id = message_id or str(uuid.uuid4())
        fragments: list[dict[str, Any]] = []
        mention = f"@{self.bot.login}"
        if mention_bot is None:
            mention_bot = mention.lower() in text.lower()
        if mention_bot and mention.lower() in text.lower():
            start = text.lower().index(mention.lower())
            before, after = text[:start], text[start + len(mention) :]
            if before:
                fragments.append(_text_fragment(before))
            fragments.append(
                {
                    "type": "mention",
                    "text": text[start : start + len(mention)],
                    "cheermote": None,
                    "emote": None,
                    "mention": {
                        "user_id": self.bot.id,
                        "user_login": self.bot.login,
                        "user_name": self.bot.display_name,
                    },
                }
            )
            if after:
                fragments.append(_text_fragment(after))
        else:
            fragments.append(_text_fragment(text))
        reply = None
        if isinstance(reply_to, SentChat):
            reply = {
                "parent_message_id": reply_to.message_id,
                "parent_message_body": reply_to.message,
                "parent_user_id": self.bot.id,
                "parent_user_login": self.bot.login,
                "parent_user_name": self.bot.display_name,
                "thread_message_id": reply_to.message_id,
                "thread_user_id": self.bot.id,
                "thread_user_login": self.bot.login,
                "thread_user_name": self.bot.display_name,
            }
        elif reply_to is not None:
            reply = dict(reply_to)
        event = {
            **_broadcaster(channel),
            "chatter_user_id": user_id,
            "chatter_user_login": login,
            "chatter_user_name": display_name or login,
            "message_id": message_id,
            "message": {"text": text, "fragments": fragments},
            "color": "#FF0000",
            "badges": [{"set_id": b, "id": "1", "info": ""} for b in badges],
            "message_type": "text",
            "cheer": None,
            "reply": reply,
            "channel_points_custom_reward_id": None,
            "channel_points_animation_id": None,
            "source_broadcaster_user_id": None,
            "source_broadcaster_user_login": None,
            "source_broadcaster_user_name": None,
            "source_message_id": None,
            "source_badges": None,
            "is_source_only": None,
        }
        await self._notify("channel.chat.message", channel.id, event)
        return message_id

    async def delete_message(
        self, message_id: str, *, user_id: str, login: str, channel: FakeUser | None = None
    ) -> None:
        channel = channel or self.channels[0]
        event = {
            **_broadcaster(channel),
            "target_user_id": user_id,
            "target_user_login": login,
            "target_user_name": login,
            "message_id": message_id,
        }
        await self._notify("channel.chat.message_delete", channel.id, event)

    async def clear_user(self, *, user_id: str, login: str, channel: FakeUser | None = None) -> None:
        channel = channel or self.channels[0]
        event = {
            **_broadcaster(channel),
            "target_user_id": user_id,
            "target_user_login": login,
            "target_user_name": login,
        }
        await self._notify("channel.chat.clear_user_messages", channel.id, event)

    async def drop_sockets(self) -> None:
        """Close every EventSub socket as Twitch does on a network error (close code 4006)."""
        for session in list(self.sessions.values()):
            await self._end_session(session, code=4006)

    # ------------------------------------------------------------------------------------------------- internals
    async def _notify(self, sub_type: str, broadcaster_id: str, event: dict[str, Any]) -> None:
        delivered = 0
        for session in list(self.sessions.values()):
            for sub in session.subscriptions:
                if sub["type"] == sub_type and sub["condition"].get("broadcaster_user_id") == broadcaster_id:
                    message = {
                        "metadata": {
                            "message_id": str(uuid.uuid4()),
                            "message_type": "notification",
                            "message_timestamp": _now_iso(),
                            "subscription_type": sub_type,
                            "subscription_version": "1",
                        },
                        "payload": {"subscription": sub, "event": event},
                    }
                    await session.ws.send_str(json.dumps(message))
                    delivered += 1
        if not delivered:
            raise AssertionError(f"nobody is subscribed to {sub_type} for broadcaster {broadcaster_id}")

    def _bearer(self, request: web.Request) -> dict[str, Any] | None:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ").removeprefix("OAuth ")
        info = self.tokens.get(token)
        if info is None or request.headers.get("Client-Id", self.client_id) != self.client_id:
            return None
        return info

    @staticmethod
    def _unauthorized() -> web.Response:
        return web.json_response(
            {"error": "Unauthorized", "status": 401, "message": "Invalid OAuth token"}, status=401
        )

    async def _validate(self, request: web.Request) -> web.Response:
        self.requests.append(("GET", "/oauth2/validate"))
        token = request.headers.get("Authorization", "").removeprefix("OAuth ").removeprefix("Bearer ")
        info = self.tokens.get(token)
        if info is None:
            return web.json_response({"status": 401, "message": "invalid access token"}, status=401)
        return web.json_response(info)

    async def _token(self, request: web.Request) -> web.Response:
        self.requests.append(("POST", "/oauth2/token"))
        q = request.query
        if q.get("client_id") != self.client_id:
            return web.json_response({"status": 400, "message": "invalid client"}, status=400)
        if q.get("client_secret") != self.client_secret:
            return web.json_response({"status": 403, "message": "invalid client secret"}, status=403)
        grant = q.get("grant_type")
        if grant == "client_credentials":
            token = "app-" + secrets.token_hex(8)
            self.tokens[token] = {"client_id": self.client_id, "scopes": [], "expires_in": 5_000_000}
            return web.json_response({"access_token": token, "expires_in": 5_000_000, "token_type": "bearer"})
        if grant == "refresh_token":
            user_id = self.refresh_tokens.pop(q.get("refresh_token", ""), None)
            if user_id is None:
                return web.json_response({"status": 400, "message": "Invalid refresh token"}, status=400)
            token, refresh = "user-" + secrets.token_hex(8), "refresh-" + secrets.token_hex(8)
            self.add_user_token(token, refresh, user_id, extra_scopes=self._extra_scopes(user_id))
            return web.json_response(
                {
                    "access_token": token,
                    "refresh_token": refresh,
                    "expires_in": 14_000,
                    "scope": self.tokens[token]["scopes"],
                    "token_type": "bearer",
                }
            )
        return web.json_response({"status": 400, "message": "unsupported grant type"}, status=400)

    async def _users(self, request: web.Request) -> web.Response:
        self.requests.append(("GET", "/helix/users"))
        if self._bearer(request) is None:
            return self._unauthorized()
        ids = request.query.getall("id", [])
        logins = [v.lower() for v in request.query.getall("login", [])]
        found = [u.as_helix() for u in self.users.values() if u.id in ids or u.login in logins]
        return web.json_response({"data": found})

    async def _subscribe(self, request: web.Request) -> web.Response:
        self.requests.append(("POST", "/helix/eventsub/subscriptions"))
        info = self._bearer(request)
        if info is None:
            return self._unauthorized()
        if "user_id" not in info:
            return web.json_response(
                {"error": "Bad Request", "status": 400, "message": "websocket transport needs a user token"},
                status=400,
            )
        body = await request.json()
        session = self.sessions.get(body.get("transport", {}).get("session_id", ""))
        if session is None:
            return web.json_response(
                {"error": "Bad Request", "status": 400, "message": "session does not exist"}, 400
            )
        sub = {
            "id": str(uuid.uuid4()),
            "status": "enabled",
            "type": body["type"],
            "version": body["version"],
            "condition": body["condition"],
            "created_at": _now_iso(),
            "transport": {"method": "websocket", "session_id": session.id, "connected_at": _now_iso()},
            "cost": 0,
        }
        session.subscriptions.append(sub)
        self.changed.set()
        self.subscriptions.append(sub)
        return web.json_response(
            {"data": [sub], "total": 1, "total_cost": 0, "max_total_cost": 10}, status=202
        )

    async def _chat(self, request: web.Request) -> web.Response:
        arrived = time.monotonic()
        self.requests.append(("POST", "/helix/chat/messages"))
        info = self._bearer(request)
        if info is None:
            return self._unauthorized()
        body = await request.json()
        if self.chat_delay_s:
            await asyncio.sleep(self.chat_delay_s)
        if self.fail_chat_with_429 > 0:
            self.fail_chat_with_429 -= 1
            return web.json_response(
                {"error": "Too Many Requests", "status": 429, "message": "Too Many Requests"},
                status=429,
                headers={"Ratelimit-Reset": str(int(time.time()) + 1)},
            )
        message = body.get("message", "")
        if info.get("user_id") != body.get("sender_id"):
            return web.json_response(
                {"error": "Forbidden", "status": 403, "message": "sender mismatch"}, status=403
            )
        if not message.strip() or len(message) > MAX_CHAT_CHARS:
            return web.json_response(
                {"error": "Bad Request", "status": 400, "message": "bad message length"}, 400
            )
        message_id = f"sent-{next(self._ids)}"
        self.sent.append(
            SentChat(
                at=arrived,
                broadcaster_id=body["broadcaster_id"],
                sender_id=body["sender_id"],
                message=message,
                reply_parent_message_id=body.get("reply_parent_message_id"),
                message_id=message_id,
            )
        )
        self.changed.set()
        return web.json_response({"data": [{"message_id": message_id, "is_sent": True, "drop_reason": None}]})

    def _extra_scopes(self, user_id: str) -> tuple[str, ...]:
        """The scopes beyond chat that `user_id`'s tokens had (a refreshed token keeps them)."""
        basic = {"user:read:chat", "user:write:chat", "user:bot"}
        for info in self.tokens.values():
            if info.get("user_id") == user_id:
                return tuple(s for s in info["scopes"] if s not in basic)
        return ()

    async def _automod_status(self, request: web.Request) -> web.Response:
        """Check AutoMod Status: `is_permitted` per message; the token must be the broadcaster's, with the scope."""
        self.requests.append(("POST", "/helix/moderation/enforcements/status"))
        info = self._bearer(request)
        if info is None or "moderation:read" not in info.get("scopes", []):
            return self._unauthorized()
        broadcaster_id = request.query.get("broadcaster_id", "")
        if info.get("user_id") != broadcaster_id:
            return web.json_response(
                {"error": "Forbidden", "status": 403, "message": "broadcaster_id must match the token"},
                status=403,
            )
        body = await request.json()
        answers = []
        for item in body.get("data", []):
            text = item.get("msg_text", "")
            permitted = not any(held.lower() in text.lower() for held in self.automod_holds)
            self.automod_checks.append((broadcaster_id, text, permitted))
            answers.append({"msg_id": item.get("msg_id"), "is_permitted": permitted})
        self.changed.set()
        return web.json_response({"data": answers})

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        if self.refuse_sockets:
            self.refused_sockets += 1
            self.changed.set()
            return web.Response(status=503)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        session = _Session(id=f"session-{uuid.uuid4().hex[:12]}", ws=ws)
        self.sessions[session.id] = session
        self.changed.set()
        welcome = {
            "metadata": {
                "message_id": str(uuid.uuid4()),
                "message_type": "session_welcome",
                "message_timestamp": _now_iso(),
            },
            "payload": {
                "session": {
                    "id": session.id,
                    "status": "connected",
                    "connected_at": _now_iso(),
                    "keepalive_timeout_seconds": KEEPALIVE_S,
                    "reconnect_url": None,
                    "recovery_url": None,
                }
            },
        }
        await ws.send_str(json.dumps(welcome))
        session.keepalive = asyncio.create_task(self._keepalive(session))
        try:
            async for msg in ws:
                if msg.type in (
                    WSMsgType.TEXT,
                    WSMsgType.BINARY,
                ):  # clients must not send: Twitch closes with 4001
                    await ws.close(code=4001)
        finally:
            await self._end_session(session)
        return ws

    async def _keepalive(self, session: _Session) -> None:
        while not session.ws.closed:
            await asyncio.sleep(KEEPALIVE_EVERY_S)
            message = {
                "metadata": {
                    "message_id": str(uuid.uuid4()),
                    "message_type": "session_keepalive",
                    "message_timestamp": _now_iso(),
                },
                "payload": {},
            }
            try:
                await session.ws.send_str(json.dumps(message))
            except ConnectionError:
                return

    async def _end_session(self, session: _Session, *, code: int = 1000) -> None:
        self.sessions.pop(session.id, None)
        self.changed.set()
        if session.keepalive is not None and session.keepalive is not asyncio.current_task():
            session.keepalive.cancel()
        if not session.ws.closed:
            await session.ws.close(code=code)


def _text_fragment(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text, "cheermote": None, "emote": None, "mention": None}


def _broadcaster(channel: FakeUser) -> dict[str, str]:
    return {
        "broadcaster_user_id": channel.id,
        "broadcaster_user_login": channel.login,
        "broadcaster_user_name": channel.display_name or channel.login,
    }
