"""The OpenAI-compatible backend against a fake server on 127.0.0.1."""

import asyncio
import json

import pytest
from aiohttp import web

from models.engine import EngineBusy, EngineError, EngineTimeout, GenerationRequest
from models.openai_backend import OpenAIBackend, OpenAISettings

SYSTEM = {"role": "system", "content": "You are Wick."}


def request(text="hi", **kw):
    return GenerationRequest(messages=[SYSTEM, {"role": "user", "content": text}], **kw)


class FakeServer:
    """Scripted /v1/chat/completions: each call pops the next behaviour."""

    def __init__(self):
        self.script = []
        self.bodies = []
        self.headers = []

    async def handle(self, req: web.Request):
        self.bodies.append(await req.json())
        self.headers.append(dict(req.headers))
        kind, arg = self.script.pop(0) if self.script else ("text", "Hello from the server.")
        if kind == "status":
            return web.Response(status=arg, text="nope", headers={"Retry-After": "0"})
        if kind == "sleep":
            await asyncio.sleep(arg)
            return web.json_response({"choices": [{"message": {"content": "late"}, "finish_reason": "stop"}]})
        if kind == "text":
            if not self.bodies[-1].get("stream"):
                return web.json_response(
                    {"choices": [{"message": {"content": arg}, "finish_reason": "stop"}]}
                )
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(req)
            for word in arg.split(" "):
                chunk = {"choices": [{"delta": {"content": word + " "}, "finish_reason": None}]}
                await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
            end = {"choices": [{"delta": {}, "finish_reason": "length"}]}
            await resp.write(f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n".encode())
            return resp
        if kind == "die":  # a server that dies mid-stream: some text, then the connection closes
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(req)
            chunk = {"choices": [{"delta": {"content": "Half a"}, "finish_reason": None}]}
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
            req.transport.close()
            return resp
        raise AssertionError(kind)


@pytest.fixture
async def server():
    fake = FakeServer()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    fake.base_url = f"http://127.0.0.1:{port}/v1"
    yield fake
    await runner.cleanup()


async def backend_for(server, **kw):
    settings = OpenAISettings(base_url=server.base_url, model="familiar-v2", **kw)
    backend = OpenAIBackend(settings)
    await backend.start()
    return backend


async def test_streaming_answer_and_payload(server):
    backend = await backend_for(server, api_key="sk-test")
    gen = await backend.generate(request(stop=("\nA:", "\nB:", "\nC:", "\nD:", "\nE:"), max_new_tokens=7))
    await backend.close()
    assert gen.text.strip() == "Hello from the server."
    assert gen.finish_reason == "length"
    assert gen.model_version == "openai:familiar-v2"
    body = server.bodies[0]
    assert body["model"] == "familiar-v2" and body["max_tokens"] == 7 and body["stream"] is True
    assert len(body["stop"]) == 4  # the API's limit
    assert server.headers[0]["Authorization"] == "Bearer sk-test"


async def test_stream_yields_pieces(server):
    backend = await backend_for(server)
    pieces = [p async for p in backend.stream(request())]
    await backend.close()
    assert len(pieces) > 1 and "".join(pieces).strip() == "Hello from the server."


async def test_non_streaming(server):
    server.script = [("text", "Plain answer.")]
    backend = await backend_for(server, stream=False)
    gen = await backend.generate(request())
    await backend.close()
    assert gen.text == "Plain answer." and server.bodies[0]["stream"] is False


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_retries_transient_errors(server, status):
    server.script = [("status", status), ("text", "Recovered.")]
    backend = await backend_for(server, retries=2)
    gen = await backend.generate(request())
    await backend.close()
    assert gen.text.strip() == "Recovered." and len(server.bodies) == 2


async def test_gives_up_after_retries(server):
    server.script = [("status", 500)] * 3
    backend = await backend_for(server, retries=1)
    with pytest.raises(EngineError, match="500"):
        await backend.generate(request())
    await backend.close()
    assert len(server.bodies) == 2


async def test_bad_key_is_not_retried(server):
    server.script = [("status", 401)]
    backend = await backend_for(server)
    with pytest.raises(EngineError, match="API key"):
        await backend.generate(request())
    await backend.close()
    assert len(server.bodies) == 1


async def test_timeout(server):
    server.script = [("sleep", 2.0)]
    backend = await backend_for(server, stream=False)
    with pytest.raises(EngineTimeout):
        await backend.generate(request(), timeout=0.3)
    await backend.close()


async def test_server_dies_mid_stream(server):
    server.script = [("die", None)]
    backend = await backend_for(server)
    with pytest.raises(EngineError):
        await backend.generate(request())
    await backend.close()
    assert len(server.bodies) == 1  # text was already delivered: not retried, never repeated


async def test_unreachable_server_is_an_engine_error():
    backend = OpenAIBackend(OpenAISettings(base_url="http://127.0.0.1:9/v1", model="m", retries=0))
    await backend.start()
    with pytest.raises(EngineError):
        await backend.generate(request())
    await backend.close()


async def test_bounded_queue(server):
    server.script = [("sleep", 0.5)] * 3
    backend = await backend_for(server, stream=False, max_concurrency=1, max_queue=1)
    first = asyncio.create_task(backend.generate(request()))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(backend.generate(request()))
    await asyncio.sleep(0.05)
    with pytest.raises(EngineBusy):
        await backend.generate(request())
    await asyncio.gather(first, second)
    await backend.close()


async def test_chat_service_works_over_the_remote_backend(server, tmp_path):
    from bot.config import ChatConfig, GenerationConfig, PromptConfig
    from bot.store import ConversationLog, Store
    from cogs.chat.service import ChatMessage, ChatService, Outcome
    from models.persona import default_card_path, load_card

    server.script = [("text", "I am the candle in your lantern.")]
    backend = await backend_for(server)
    store = await Store.open(tmp_path / "f.db")
    chat = ChatService(
        backend=backend,
        card=load_card(default_card_path()),
        log_=ConversationLog(store),
        chat=ChatConfig(),
        generation=GenerationConfig(),
        prompt=PromptConfig(),
    )
    reply = await chat.respond(
        ChatMessage(
            platform="console",
            conversation_id="c",
            channel_id="c",
            author_id="u",
            author_name="Ada",
            content="Who are you?",
        )
    )
    await backend.close()
    await store.close()
    assert reply.outcome is Outcome.REPLIED and reply.text == "I am the candle in your lantern."
    assert server.bodies[0]["messages"][0]["role"] == "system"
