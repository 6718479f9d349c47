"""The peer for the serving benchmark: the same chat requests through llama-cpp-python on the same GGUF file.

Run by bench/serving_bench.py in a child process (a crash in the native library must not take the benchmark
down); prints one JSON line: ``{"single": [tokens, seconds], "serial": [tokens, seconds]}``. llama-cpp-python
serves one request at a time, so "serial" runs all of them one after another, as it would serve them.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from bench.engine_bench import build_requests
from models.engine import GenerationRequest
from models.loader import embedded_gguf_path

CONTEXT_TOKENS = 2048


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--new-tokens", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    args = parser.parse_args()
    from llama_cpp import Llama  # ImportError: the parent reports "not installed"

    llm: Any = Llama(
        model_path=str(embedded_gguf_path()), n_ctx=CONTEXT_TOKENS, n_threads=args.threads, verbose=False
    )

    def run(request: GenerationRequest) -> int:
        out = llm.create_chat_completion(
            messages=list(request.messages),
            max_tokens=request.max_new_tokens,
            temperature=0.0,
            repeat_penalty=request.repetition_penalty,
        )
        return int(out["usage"]["completion_tokens"])

    requests = build_requests(args.requests, args.new_tokens)
    run(requests[0])  # warm-up
    started = time.perf_counter()
    single = [run(requests[0]), time.perf_counter() - started]
    started = time.perf_counter()
    tokens = sum(run(r) for r in requests)
    print(json.dumps({"single": single, "serial": [tokens, time.perf_counter() - started]}))


if __name__ == "__main__":
    main()
