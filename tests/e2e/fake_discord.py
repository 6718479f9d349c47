"""A fake Discord on 127.0.0.1: enough REST and gateway for the real discord.py client to log in, chat and resume.

REST answers what login, command sync, messages, typing, reactions, interaction callbacks and webhook follow-ups
need, and records every request. The gateway speaks JSON text frames: HELLO, IDENTIFY → READY + GUILD_CREATE,
heartbeat ACKs, RESUME with replay of missed events. Tests inject events (messages, deletions, reactions,
interactions: slash commands, buttons, message menus, modal submits), drop the socket, and make a route answer 429
once.

Point discord.py at it with `discord.http.Route.BASE = fake.api_base` (the gateway URL comes from `/gateway/bot`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from aiohttp import WSMsgType, web

API_PREFIX = "/api/v10"
TOKEN = "fake-bot-token.abc.def"
APP_ID = 900000000000000001
BOT_ID = 900000000000000002
GUILD_ID = 900000000000000100
GENERAL_ID = 900000000000000101  # a text channel
OTHER_ID = 900000000000000102  # a second text channel
THREAD_ID = 900000000000000103  # a public thread in #general
DM_CHANNEL_ID = 900000000000000104  # Ada's DM with the bot
MOD_ROLE_ID = 900000000000000201
ADMIN_ROLE_ID = 900000000000000202

# Permission bits (https://discord.com/developers/docs/topics/permissions)
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
MANAGE_MESSAGES = 1 << 13
MANAGE_GUILD = 1 << 5
MEMBER_PERMISSIONS = VIEW_CHANNEL | SEND_MESSAGES
EPHEMERAL = 1 << 6

_EVENT_WAIT_S = 5.0


def _user(uid: int, name: str, *, bot: bool = False) -> dict[str, Any]:
    return {
        "id": str(uid),
        "username": name,
        "global_name": name,
        "discriminator": "0",
        "avatar": None,
        "bot": bot,
        "public_flags": 0,
    }


BOT_USER = _user(BOT_ID, "Familiar", bot=True)
ADA = _user(900000000000000301, "Ada")
BOB = _user(900000000000000302, "Bob")  # a moderator
CAROL = _user(900000000000000303, "Carol")  # an admin (Manage Server)
OTHER_BOT = _user(900000000000000399, "OtherBot", bot=True)
ROLES_OF = {
    ADA["id"]: [],
    BOB["id"]: [str(MOD_ROLE_ID)],
    CAROL["id"]: [str(ADMIN_ROLE_ID)],
    OTHER_BOT["id"]: [],
}
PERMISSIONS_OF = {
    ADA["id"]: MEMBER_PERMISSIONS,
    BOB["id"]: MEMBER_PERMISSIONS | MANAGE_MESSAGES,
    CAROL["id"]: MEMBER_PERMISSIONS | MANAGE_GUILD | MANAGE_MESSAGES,
    OTHER_BOT["id"]: MEMBER_PERMISSIONS,
}


def _json(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # discord.py parses a body as JSON only when Content-Type is exactly "application/json" (no charset).
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class Request:
    method: str
    path: str  # without the /api/v10 prefix
    query: dict[str, str]
    json: Any
    status: int = 0
    files: list[Attachment] = field(default_factory=list)  # the files of a multipart request
    at: float = field(default_factory=time.monotonic)  # when it arrived (pacing checks)


@dataclass(frozen=True)
class Attachment:
    """A file the bot uploaded (one part of a multipart request)."""

    field: str
    filename: str | None
    content_type: str
    data: bytes


@dataclass
class Session:
    session_id: str
    shard: tuple[int, int]
    seq: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)  # for RESUME replay
    ws: web.WebSocketResponse | None = None


@dataclass
class Interaction:
    id: str
    token: str
    payload: dict[str, Any]
    original_message_id: str | None = None  # the deferred/answered response message, or the clicked message
    followed_up: bool = False


class FakeDiscord:
    def __init__(self, *, token: str = TOKEN, shards: int = 1) -> None:
        self.token = token
        self.recommended_shards = shards
        self.requests: list[Request] = []
        self.messages: dict[str, dict[str, Any]] = {}  # every message the fake knows: injected and sent
        self.sent: list[
            dict[str, Any]
        ] = []  # messages the bot created (channel posts and webhook follow-ups)
        self.interactions: dict[str, Interaction] = {}
        self.commands: dict[str, list[dict[str, Any]]] = {}  # "global" or guild id -> synced commands
        self.sessions: dict[str, Session] = {}
        self.identifies = 0
        self.resumes = 0
        self.intents: int | None = None
        self._rate_limits: list[tuple[str, re.Pattern[str], float]] = []
        # The server's AutoMod: a message created with content containing one of these gets 400, code 200000.
        self.automod_blocks: list[str] = []
        self.automod_refused: list[str] = []  # the contents it refused, in order
        self._ids = itertools.count(910000000000000000)
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ----------------------------------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def close(self) -> None:
        for session in self.sessions.values():
            if session.ws is not None and not session.ws.closed:
                await session.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}{API_PREFIX}"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    def new_id(self) -> str:
        return str(next(self._ids))

    # ----------------------------------------------------------------------------------------------- waiting
    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_until(self, predicate: Callable[[], Any], within: float = _EVENT_WAIT_S) -> Any:
        """Wait until `predicate()` is truthy (re-checked on every request or gateway change); return its value."""

        async def loop() -> Any:
            async with self._changed:
                while True:
                    value = predicate()
                    if value:
                        return value
                    await self._changed.wait()

        return await asyncio.wait_for(loop(), within)

    async def wait_for_request(
        self, method: str, pattern: str, *, count: int = 1, within: float = _EVENT_WAIT_S
    ) -> list[Request]:
        """Wait until `count` successful requests match `method` and the path regex; return all matches."""
        rx = re.compile(pattern)

        def matches() -> list[Request]:
            found = [
                r for r in self.requests if r.method == method and rx.fullmatch(r.path) and r.status < 300
            ]
            return found if len(found) >= count else []

        return await self.wait_until(matches, within)

    def requests_to(self, method: str, pattern: str) -> list[Request]:
        rx = re.compile(pattern)
        return [r for r in self.requests if r.method == method and rx.fullmatch(r.path)]

    async def wait_for_sent(
        self,
        predicate: Callable[[dict[str, Any]], bool] = lambda m: True,
        *,
        count: int = 1,
        within: float = _EVENT_WAIT_S,
    ) -> list[dict[str, Any]]:
        """Wait until the bot has created `count` messages matching `predicate`; return them."""

        def matches() -> list[dict[str, Any]]:
            found = [m for m in self.sent if predicate(m)]
            return found if len(found) >= count else []

        return await self.wait_until(matches, within)

    def rate_limit_once(self, method: str, pattern: str, *, retry_after: float = 0.05) -> None:
        """The next request matching `method` and the path regex gets a 429 with `retry_after`."""
        self._rate_limits.append((method, re.compile(pattern), retry_after))

    # ----------------------------------------------------------------------------------------------- REST
    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        body: Any = None
        files: list[Attachment] = []
        if request.can_read_body:
            if request.content_type.startswith("multipart/"):
                form = await request.post()
                raw = form.get("payload_json")
                body = json.loads(raw) if isinstance(raw, str) else None
                for name, value in form.items():
                    if isinstance(value, web.FileField):
                        data = value.file.read()
                        files.append(Attachment(name, value.filename, value.content_type, data))
            else:
                text = await request.text()
                body = json.loads(text) if text else None
        rec = Request(request.method, path, dict(request.query), body, files=files)
        self.requests.append(rec)
        response = self._answer(request, rec)
        rec.status = response.status
        await self._notify()
        return response

    def _answer(self, request: web.Request, rec: Request) -> web.Response:
        for i, (method, rx, retry_after) in enumerate(self._rate_limits):
            if method == rec.method and rx.fullmatch(rec.path):
                del self._rate_limits[i]
                return _json(
                    {"message": "You are being rate limited.", "retry_after": retry_after, "global": False},
                    status=429,
                    headers={"Via": "1.1 google", "X-RateLimit-Scope": "user", "Retry-After": "1"},
                )
        webhook = rec.path.startswith(("/webhooks/", "/interactions/"))
        if not webhook and request.headers.get("Authorization") != f"Bot {self.token}":
            return _json({"message": "401: Unauthorized", "code": 0}, status=401)
        for method, rx, handler in self._routes:
            if method == rec.method and (m := re.fullmatch(rx, rec.path)):
                return handler(self, rec, *m.groups())
        return _json({"message": "404: Not Found", "code": 0}, status=404)

    def _gateway_bot(self, rec: Request) -> web.Response:
        limit = {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}
        return _json(
            {"url": self.gateway_url, "shards": self.recommended_shards, "session_start_limit": limit}
        )

    def _me(self, rec: Request) -> web.Response:
        return _json(BOT_USER)

    def _application(self, rec: Request) -> web.Response:
        return _json(
            {
                "id": str(APP_ID),
                "name": "Familiar",
                "icon": None,
                "description": "",
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": CAROL,
                "verify_key": "0" * 64,
                "flags": 0,
                "team": None,
                "summary": "",
            }
        )

    def _put_commands(self, rec: Request, app_id: str, guild_id: str | None = None) -> web.Response:
        synced = []
        for cmd in rec.json or []:
            synced.append(
                {
                    "id": self.new_id(),
                    "application_id": app_id,
                    "version": self.new_id(),
                    "type": 1,
                    "description": "",
                    "options": [],
                    **cmd,
                    **({"guild_id": guild_id} if guild_id else {}),
                }
            )
        self.commands[guild_id or "global"] = synced
        return _json(synced)

    def _put_guild_commands(self, rec: Request, app_id: str, guild_id: str) -> web.Response:
        return self._put_commands(rec, app_id, guild_id)

    def _get_commands(self, rec: Request, app_id: str, guild_id: str | None = None) -> web.Response:
        return _json(self.commands.get(guild_id or "global", []))

    def _create_message(self, rec: Request, channel_id: str) -> web.Response:
        body = rec.json or {}
        content = body.get("content") or ""
        if any(blocked.lower() in content.lower() for blocked in self.automod_blocks):
            self.automod_refused.append(content)
            return _json(
                {"message": "Message was blocked by automatic moderation", "code": 200000}, status=400
            )
        ref = body.get("message_reference")
        referenced = self.messages.get(str(ref["message_id"])) if ref else None
        if ref and referenced is None and ref.get("fail_if_not_exists", True):
            return _json({"message": "Unknown message", "code": 10008}, status=400)
        msg = self.message_payload(
            channel_id=channel_id,
            author=BOT_USER,
            content=body.get("content") or "",
            referenced=referenced,
            components=body.get("components") or [],
            embeds=body.get("embeds") or [],
        )
        self._record_sent(msg, body, kind="channel")
        return _json(msg)

    def _edit_message(self, rec: Request, channel_id: str, message_id: str) -> web.Response:
        msg = self.messages.get(message_id)
        if msg is None:
            return _json({"message": "Unknown message", "code": 10008}, status=404)
        self._apply_edit(msg, rec.json or {})
        return _json(msg)

    def _delete_message(self, rec: Request, channel_id: str, message_id: str) -> web.Response:
        self.messages.pop(message_id, None)
        return web.Response(status=204)

    def _no_content(self, rec: Request, *args: str) -> web.Response:
        return web.Response(status=204)

    def _interaction_callback(self, rec: Request, interaction_id: str, token: str) -> web.Response:
        inter = self.interactions.get(interaction_id)
        if inter is None or inter.token != token:
            return _json({"message": "Unknown interaction", "code": 10062}, status=404)
        body = rec.json or {}
        kind = body.get("type")
        data = body.get("data") or {}
        response: dict[str, Any] = {
            "interaction": {
                "id": interaction_id,
                "type": inter.payload["type"],
                "response_message_loading": kind == 5,
                "response_message_ephemeral": bool((data.get("flags") or 0) & EPHEMERAL),
            }
        }
        if kind in (4, 5):  # a new message (or its "thinking…" placeholder)
            msg = self.message_payload(
                channel_id=inter.payload["channel_id"],
                author=BOT_USER,
                content=data.get("content") or "",
                components=data.get("components") or [],
                embeds=data.get("embeds") or [],
                flags=data.get("flags") or 0,
                webhook_id=str(APP_ID),
            )
            inter.original_message_id = msg["id"]
            response["interaction"]["response_message_id"] = msg["id"]
            if kind == 4:
                self._record_sent(msg, data, kind="callback")
                response["resource"] = {"type": 4, "message": msg}
            else:
                self.messages[msg["id"]] = msg
        elif kind == 7 and inter.original_message_id:  # update the clicked message
            msg = self.messages[inter.original_message_id]
            self._apply_edit(msg, data)
            response["resource"] = {"type": 7, "message": msg}
        return _json(response)

    def _interaction_by_token(self, token: str) -> Interaction | None:
        return next((i for i in self.interactions.values() if i.token == token), None)

    def _followup(self, rec: Request, app_id: str, token: str) -> web.Response:
        inter = self._interaction_by_token(token)
        if inter is None:
            return _json({"message": "Unknown webhook", "code": 10015}, status=404)
        body = rec.json or {}
        deferred = inter.payload["type"] == 2 and not inter.followed_up and inter.original_message_id
        if deferred:  # Discord: the first follow-up of a deferred response replaces the "thinking…" message
            msg = self.messages[inter.original_message_id]  # type: ignore[index]
            self._apply_edit(msg, body)
            msg["flags"] = msg.get("flags", 0) | (body.get("flags") or 0)
        else:
            msg = self.message_payload(
                channel_id=inter.payload["channel_id"],
                author=BOT_USER,
                content=body.get("content") or "",
                components=body.get("components") or [],
                embeds=body.get("embeds") or [],
                flags=body.get("flags") or 0,
                webhook_id=app_id,
            )
        inter.followed_up = True
        self._record_sent(msg, body, kind="followup")
        return _json(msg)

    def _edit_webhook_message(self, rec: Request, app_id: str, token: str, message_id: str) -> web.Response:
        inter = self._interaction_by_token(token)
        if message_id == "@original":
            message_id = inter.original_message_id if inter else ""  # type: ignore[assignment]
        msg = self.messages.get(message_id or "")
        if msg is None:
            return _json({"message": "Unknown message", "code": 10008}, status=404)
        self._apply_edit(msg, rec.json or {})
        return _json(msg)

    def _get_webhook_message(self, rec: Request, app_id: str, token: str, message_id: str) -> web.Response:
        inter = self._interaction_by_token(token)
        if message_id == "@original" and inter is not None:
            message_id = inter.original_message_id or ""
        msg = self.messages.get(message_id)
        if msg is None:
            return _json({"message": "Unknown message", "code": 10008}, status=404)
        return _json(msg)

    def _record_sent(self, msg: dict[str, Any], body: dict[str, Any], *, kind: str) -> None:
        self.messages[msg["id"]] = msg
        self.sent.append({**msg, "kind": kind, "allowed_mentions": body.get("allowed_mentions")})

    def _apply_edit(self, msg: dict[str, Any], body: dict[str, Any]) -> None:
        for key in ("content", "components", "embeds"):
            if key in body and body[key] is not None:
                msg[key] = body[key]
        msg["edited_timestamp"] = _now()
        msg.setdefault("edits", []).append(body)

    _routes: ClassVar[list[tuple[str, str, Callable[..., web.Response]]]] = [
        ("GET", r"/gateway/bot", _gateway_bot),
        ("GET", r"/users/@me", _me),
        ("GET", r"/oauth2/applications/@me", _application),
        ("PUT", r"/applications/(\d+)/commands", _put_commands),
        ("GET", r"/applications/(\d+)/commands", _get_commands),
        ("PUT", r"/applications/(\d+)/guilds/(\d+)/commands", _put_guild_commands),
        ("GET", r"/applications/(\d+)/guilds/(\d+)/commands", _get_commands),
        ("POST", r"/channels/(\d+)/messages", _create_message),
        ("PATCH", r"/channels/(\d+)/messages/(\d+)", _edit_message),
        ("DELETE", r"/channels/(\d+)/messages/(\d+)", _delete_message),
        ("POST", r"/channels/(\d+)/typing", _no_content),
        ("PUT", r"/channels/(\d+)/messages/(\d+)/reactions/([^/]+)/@me", _no_content),
        ("DELETE", r"/channels/(\d+)/messages/(\d+)/reactions/([^/]+)/@me", _no_content),
        ("POST", r"/interactions/(\d+)/([^/]+)/callback", _interaction_callback),
        ("POST", r"/webhooks/(\d+)/([^/]+)", _followup),
        ("PATCH", r"/webhooks/(\d+)/([^/]+)/messages/(@original|\d+)", _edit_webhook_message),
        ("GET", r"/webhooks/(\d+)/([^/]+)/messages/(@original|\d+)", _get_webhook_message),
        ("DELETE", r"/webhooks/(\d+)/([^/]+)/messages/(@original|\d+)", _no_content),
    ]

    # ----------------------------------------------------------------------------------------------- gateway
    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        await ws.send_json({"op": 10, "d": {"heartbeat_interval": 41250}, "s": None, "t": None})
        session: Session | None = None
        try:
            async for frame in ws:
                if frame.type is not WSMsgType.TEXT:
                    continue
                payload = json.loads(frame.data)
                op, d = payload.get("op"), payload.get("d")
                if op == 1:
                    await ws.send_json({"op": 11, "d": None, "s": None, "t": None})
                elif op == 2:
                    session = await self._identify(ws, d)
                    if session is None:
                        return ws
                elif op == 6:
                    session = await self._resume(ws, d)
                    if session is None:
                        return ws
        finally:
            if session is not None and session.ws is ws:
                session.ws = None
            await self._notify()
        return ws

    async def _identify(self, ws: web.WebSocketResponse, d: dict[str, Any]) -> Session | None:
        if d.get("token") != self.token:
            await ws.close(code=4004, message=b"Authentication failed.")
            return None
        self.identifies += 1
        self.intents = d.get("intents")
        shard = tuple(d.get("shard") or (0, 1))
        session = Session(session_id=f"session-{self.identifies}", shard=(shard[0], shard[1]), ws=ws)
        self.sessions[session.session_id] = session
        owns_guild = (GUILD_ID >> 22) % session.shard[1] == session.shard[0]
        ready = {
            "v": 10,
            "user": BOT_USER,
            "guilds": [{"id": str(GUILD_ID), "unavailable": True}] if owns_guild else [],
            "session_id": session.session_id,
            "resume_gateway_url": self.gateway_url,
            "shard": list(session.shard),
            "application": {"id": str(APP_ID), "flags": 0},
            "private_channels": [],
        }
        await self._send_dispatch(session, "READY", ready)
        if owns_guild:
            await self._send_dispatch(session, "GUILD_CREATE", self.guild_payload())
        await self._notify()
        return session

    async def _resume(self, ws: web.WebSocketResponse, d: dict[str, Any]) -> Session | None:
        session = self.sessions.get(d.get("session_id", ""))
        if session is None or d.get("token") != self.token:
            await ws.send_json({"op": 9, "d": False, "s": None, "t": None})
            return None
        self.resumes += 1
        session.ws = ws
        missed = [e for e in session.events if e["s"] > (d.get("seq") or 0)]
        for event in missed:
            await ws.send_json(event)
        await self._send_dispatch(session, "RESUMED", {})
        await self._notify()
        return session

    async def _send_dispatch(self, session: Session, event: str, data: dict[str, Any]) -> None:
        session.seq += 1
        frame = {"op": 0, "t": event, "s": session.seq, "d": data}
        session.events.append(frame)
        del session.events[:-500]  # a bounded replay buffer, like Discord's
        if session.ws is not None and not session.ws.closed:
            await session.ws.send_json(frame)

    def _live_session(self, guild_id: int | None) -> Session:
        candidates = [s for s in self.sessions.values() if s.ws is not None or s.events]
        if not candidates:
            raise AssertionError("no gateway session: the bot has not identified")
        for s in reversed(candidates):
            shard_id, count = s.shard
            if guild_id is None and shard_id == 0:
                return s
            if guild_id is not None and (guild_id >> 22) % count == shard_id:
                return s
        return candidates[-1]

    async def dispatch(self, event: str, data: dict[str, Any], *, guild_id: int | None = GUILD_ID) -> None:
        """Send a gateway event to the session that owns the guild (or buffer it while that socket is down)."""
        await self._send_dispatch(self._live_session(guild_id), event, data)

    async def drop_gateway(self, code: int = 4000) -> None:
        """Close every live gateway socket (an outage); discord.py should reconnect and RESUME."""
        for session in self.sessions.values():
            if session.ws is not None and not session.ws.closed:
                await session.ws.close(code=code, message=b"dropped by test")
                session.ws = None
        await self._notify()

    def connected(self) -> bool:
        return any(s.ws is not None and not s.ws.closed for s in self.sessions.values())

    # ----------------------------------------------------------------------------------------------- payloads
    def guild_payload(self) -> dict[str, Any]:
        everyone = {
            "id": str(GUILD_ID),
            "name": "@everyone",
            "permissions": str(MEMBER_PERMISSIONS),
            "position": 0,
        }
        roles = [
            everyone,
            {"id": str(MOD_ROLE_ID), "name": "Mods", "permissions": str(MANAGE_MESSAGES), "position": 1},
            {"id": str(ADMIN_ROLE_ID), "name": "Admins", "permissions": str(MANAGE_GUILD), "position": 2},
        ]
        for role in roles:
            role.update({"color": 0, "hoist": False, "managed": False, "mentionable": False, "flags": 0})

        def text_channel(cid: int, name: str, position: int) -> dict[str, Any]:
            return {
                "id": str(cid),
                "type": 0,
                "guild_id": str(GUILD_ID),
                "name": name,
                "position": position,
                "permission_overwrites": [],
                "nsfw": False,
                "parent_id": None,
            }

        thread = {
            "id": str(THREAD_ID),
            "type": 11,
            "guild_id": str(GUILD_ID),
            "parent_id": str(GENERAL_ID),
            "owner_id": ADA["id"],
            "name": "a thread",
            "message_count": 0,
            "member_count": 1,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": 1440,
                "archive_timestamp": _now(),
                "locked": False,
            },
        }
        members = [self.member_payload(u) for u in (BOT_USER, ADA, BOB, CAROL, OTHER_BOT)]
        return {
            "id": str(GUILD_ID),
            "name": "Test Server",
            "icon": None,
            "owner_id": CAROL["id"],
            "roles": roles,
            "emojis": [],
            "stickers": [],
            "features": [],
            "channels": [text_channel(GENERAL_ID, "general", 0), text_channel(OTHER_ID, "other", 1)],
            "threads": [thread],
            "members": members,
            "member_count": len(members),
            "voice_states": [],
            "presences": [],
            "large": False,
            "unavailable": False,
            "joined_at": _now(),
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "premium_tier": 0,
            "preferred_locale": "en-US",
            "system_channel_flags": 0,
        }

    def member_payload(self, user: dict[str, Any], *, with_user: bool = True) -> dict[str, Any]:
        member: dict[str, Any] = {
            "roles": ROLES_OF.get(user["id"], []),
            "joined_at": _now(),
            "deaf": False,
            "mute": False,
            "flags": 0,
            "nick": None,
        }
        if with_user:
            member["user"] = user
        return member

    def message_payload(
        self,
        *,
        channel_id: str | int,
        author: dict[str, Any],
        content: str,
        guild: bool | None = None,
        mentions: list[dict[str, Any]] = (),  # type: ignore[assignment]
        referenced: dict[str, Any] | None = None,
        components: list[Any] = (),  # type: ignore[assignment]
        embeds: list[Any] = (),  # type: ignore[assignment]
        flags: int = 0,
        webhook_id: str | None = None,
        message_id: str | None = None,
    ) -> dict[str, Any]:
        channel_id = str(channel_id)
        in_guild = channel_id != str(DM_CHANNEL_ID) if guild is None else guild
        msg: dict[str, Any] = {
            "id": message_id or self.new_id(),
            "channel_id": channel_id,
            "author": author,
            "content": content,
            "timestamp": _now(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": list(mentions),
            "mention_roles": [],
            "attachments": [],
            "embeds": list(embeds),
            "pinned": False,
            "type": 19 if referenced else 0,
            "flags": flags,
            "components": list(components),
        }
        if webhook_id:
            msg["webhook_id"] = webhook_id
            msg["application_id"] = str(APP_ID)
        if in_guild:
            msg["guild_id"] = str(GUILD_ID)
            if not webhook_id:
                msg["member"] = self.member_payload(author, with_user=False)
        if referenced is not None:
            msg["message_reference"] = {
                "type": 0,
                "message_id": referenced["id"],
                "channel_id": referenced["channel_id"],
                **({"guild_id": str(GUILD_ID)} if in_guild else {}),
            }
            msg["referenced_message"] = referenced
        return msg

    # ----------------------------------------------------------------------------------------------- injection
    async def user_message(
        self,
        content: str,
        *,
        author: dict[str, Any] = ADA,
        channel_id: int = GENERAL_ID,
        mention_bot: bool = False,
        reply_to: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A person (or another bot) posts a message; `mention_bot` prefixes `<@bot>` like the Discord client."""
        if mention_bot:
            content = f"<@{BOT_ID}> {content}"
        known = {u["id"]: u for u in (BOT_USER, ADA, BOB, CAROL, OTHER_BOT)}
        mentioned = dict.fromkeys(re.findall(r"<@!?(\d+)>", content))
        mentions = [known[uid] for uid in mentioned if uid in known]
        if reply_to is not None and reply_to["author"]["id"] == BOT_USER["id"] and BOT_USER not in mentions:
            mentions.append(BOT_USER)  # a reply pings the replied-to author by default
        msg = self.message_payload(
            channel_id=channel_id, author=author, content=content, mentions=mentions, referenced=reply_to
        )
        msg["mention_everyone"] = "@everyone" in content or "@here" in content
        self.messages[msg["id"]] = msg
        guild_id = GUILD_ID if "guild_id" in msg else None
        await self.dispatch("MESSAGE_CREATE", msg, guild_id=guild_id)
        return msg

    async def delete_message(self, message: dict[str, Any]) -> None:
        self.messages.pop(message["id"], None)
        data = {"id": message["id"], "channel_id": message["channel_id"]}
        if "guild_id" in message:
            data["guild_id"] = message["guild_id"]
        await self.dispatch("MESSAGE_DELETE", data, guild_id=GUILD_ID if "guild_id" in message else None)

    async def add_reaction(self, message: dict[str, Any], emoji: str, *, user: dict[str, Any] = ADA) -> None:
        data: dict[str, Any] = {
            "user_id": user["id"],
            "channel_id": message["channel_id"],
            "message_id": message["id"],
            "message_author_id": message["author"]["id"],
            "emoji": {"id": None, "name": emoji},
            "burst": False,
            "type": 0,
        }
        if "guild_id" in message:
            data["guild_id"] = message["guild_id"]
            data["member"] = self.member_payload(user)
        await self.dispatch(
            "MESSAGE_REACTION_ADD", data, guild_id=GUILD_ID if "guild_id" in message else None
        )

    def _interaction_base(self, kind: int, *, user: dict[str, Any], channel_id: int) -> dict[str, Any]:
        interaction_id = self.new_id()
        payload: dict[str, Any] = {
            "id": interaction_id,
            "application_id": str(APP_ID),
            "type": kind,
            "token": f"itoken-{interaction_id}",
            "version": 1,
            "channel_id": str(channel_id),
            "app_permissions": str(MEMBER_PERMISSIONS),
            "locale": "en-US",
            "attachment_size_limit": 8 * 1024 * 1024,
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(GUILD_ID)},
        }
        if channel_id == DM_CHANNEL_ID:
            payload["channel"] = {"id": str(channel_id), "type": 1, "recipients": [user]}
            payload["user"] = user
            payload["context"] = 1
        else:
            is_thread = channel_id == THREAD_ID
            payload["guild_id"] = str(GUILD_ID)
            payload["channel"] = {
                "id": str(channel_id),
                "type": 11 if is_thread else 0,
                "guild_id": str(GUILD_ID),
                "name": "x",
                "position": 0,
                "permission_overwrites": [],
                **({"parent_id": str(GENERAL_ID)} if is_thread else {}),
            }
            member = self.member_payload(user)
            member["permissions"] = str(PERMISSIONS_OF.get(user["id"], MEMBER_PERMISSIONS))
            payload["member"] = member
            payload["guild_locale"] = "en-US"
            payload["context"] = 0
        return payload

    async def slash(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        user: dict[str, Any] = ADA,
        channel_id: int = GENERAL_ID,
        raw_options: list[dict[str, Any]] | None = None,
    ) -> Interaction:
        """Someone runs `/name`; string options unless `raw_options` gives the exact option list."""
        payload = self._interaction_base(2, user=user, channel_id=channel_id)
        synced = {c["name"]: c for cmds in self.commands.values() for c in cmds}
        opts = (
            raw_options
            if raw_options is not None
            else [{"name": k, "type": 3, "value": v} for k, v in (options or {}).items()]
        )
        payload["data"] = {
            "id": synced.get(name, {}).get("id", self.new_id()),
            "name": name,
            "type": 1,
            "options": opts,
        }
        inter = Interaction(payload["id"], payload["token"], payload)
        self.interactions[inter.id] = inter
        await self.dispatch(
            "INTERACTION_CREATE", payload, guild_id=GUILD_ID if "guild_id" in payload else None
        )
        return inter

    async def click(
        self, message: dict[str, Any], custom_id: str, *, user: dict[str, Any] = ADA
    ) -> Interaction:
        """Someone clicks the button `custom_id` on `message`."""
        channel_id = int(message["channel_id"])
        payload = self._interaction_base(3, user=user, channel_id=channel_id)
        payload["data"] = {"custom_id": custom_id, "component_type": 2}
        payload["message"] = self.messages.get(message["id"], message)
        inter = Interaction(payload["id"], payload["token"], payload, original_message_id=message["id"])
        self.interactions[inter.id] = inter
        await self.dispatch(
            "INTERACTION_CREATE", payload, guild_id=GUILD_ID if "guild_id" in payload else None
        )
        return inter

    async def message_menu(
        self, name: str, message: dict[str, Any], *, user: dict[str, Any] = ADA
    ) -> Interaction:
        """Someone picks the message context-menu command `name` (Apps → name) on `message`."""
        payload = self._interaction_base(2, user=user, channel_id=int(message["channel_id"]))
        synced = {c["name"]: c for cmds in self.commands.values() for c in cmds}
        target = self.messages.get(message["id"], message)
        payload["data"] = {
            "id": synced.get(name, {}).get("id", self.new_id()),
            "name": name,
            "type": 3,  # a message command
            "target_id": message["id"],
            "resolved": {"messages": {message["id"]: target}},
        }
        inter = Interaction(payload["id"], payload["token"], payload)
        self.interactions[inter.id] = inter
        await self.dispatch(
            "INTERACTION_CREATE", payload, guild_id=GUILD_ID if "guild_id" in payload else None
        )
        return inter

    async def submit_modal(
        self, opened: Interaction, values: dict[str, str] | list[str], *, user: dict[str, Any] = ADA
    ) -> Interaction:
        """Someone submits the modal the bot showed in answer to `opened` (callback type 9).

        `values`: by text input custom id, or in the order the inputs appear.
        """
        callback = (await self.wait_for_callback(opened)).json
        assert callback["type"] == 9, f"the bot answered with type {callback['type']}, not a modal"
        modal = callback["data"]
        inputs: list[str] = []

        def filled(component: dict[str, Any]) -> dict[str, Any]:
            kind = component["type"]
            if kind == 1:  # an action row
                return {"type": 1, "components": [filled(c) for c in component["components"]]}
            if kind == 18:  # a label around one component
                return {"type": 18, "component": filled(component["component"])}
            custom_id = component["custom_id"]
            inputs.append(custom_id)
            value = values.get(custom_id, "") if isinstance(values, dict) else values[len(inputs) - 1]
            return {"type": kind, "custom_id": custom_id, "value": value}

        payload = self._interaction_base(5, user=user, channel_id=int(opened.payload["channel_id"]))
        payload["data"] = {
            "custom_id": modal["custom_id"],
            "components": [filled(c) for c in modal["components"]],
        }
        inter = Interaction(payload["id"], payload["token"], payload)
        self.interactions[inter.id] = inter
        await self.dispatch(
            "INTERACTION_CREATE", payload, guild_id=GUILD_ID if "guild_id" in payload else None
        )
        return inter

    async def wait_for_callback(self, inter: Interaction, within: float = _EVENT_WAIT_S) -> Request:
        (req,) = (
            await self.wait_for_request("POST", rf"/interactions/{inter.id}/[^/]+/callback", within=within)
        )[:1]
        return req


def custom_ids(message: dict[str, Any]) -> list[str]:
    """The custom ids of the buttons on a message (action rows flattened)."""
    return [c.get("custom_id") for row in message.get("components") or [] for c in row.get("components", [])]
