"""The ceiling peer of ``bench/serve.py``: uvicorn (httptools, uvloop) with an empty handler.

A raw ASGI app that reads the request body and sends the same short JSON every time: no
parsing, no validation, no model. What it answers per second on the benchmark's core bounds
what any one-worker uvicorn server can answer there, meguri's included; its answer is not a
prediction, so the benchmark does not check it. Run as
``uvicorn --app-dir bench _serve_empty_app:app --loop uvloop --http httptools``.
"""

from __future__ import annotations

from typing import Any

ANSWER = b'{"predictions":[0]}'
HEAD = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json")],
}
BODY = {"type": "http.response.body", "body": ANSWER}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send(HEAD)
    await send(BODY)
