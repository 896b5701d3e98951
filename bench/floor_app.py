"""The framework floor: a do-nothing FastAPI webhook under the same uvicorn and TLS settings.

It parses the body the idiomatic way and answers "allowed" with the uid. Our server's
throughput is reported as a ratio to this, which holds across machines.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from uvicorn.supervisors import Multiprocess

from webhook.server.protocol import WebhookHttpProtocol
from webhook.server.tls import uvicorn_factory


def create_floor_app() -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/validate")
    @app.post("/mutate")
    async def review(request: Request) -> dict[str, Any]:
        body = await request.json()
        return {
            "apiVersion": body["apiVersion"],
            "kind": "AdmissionReview",
            "response": {"uid": body["request"]["uid"], "allowed": True},
        }

    @app.get("/readyz")
    async def readyz() -> dict[str, bool]:
        return {"ready": True}

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert-dir", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    config = uvicorn.Config(
        app=create_floor_app, factory=True, host="127.0.0.1", port=args.port,
        ssl_context_factory=functools.partial(uvicorn_factory, args.cert_dir / "tls.crt", args.cert_dir / "tls.key"),
        http=WebhookHttpProtocol, loop="uvloop", lifespan="off", workers=args.workers,
        access_log=False, log_config=None, server_header=False, timeout_keep_alive=100,
    )
    if args.workers > 1:
        Multiprocess(config, sockets=[config.bind_socket()]).run()
    else:
        uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
