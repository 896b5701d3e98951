"""uvicorn's httptools protocol, with a shutdown that does not hang on idle TLS connections.

Closing a TLS transport waits for the peer's close_notify, up to 30 s; an idle keep-alive
client (such as the API server) never sends one, so a plain close stalls every shutdown.
An idle connection has nothing in flight, so aborting it loses nothing.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class WebhookHttpProtocol(HttpToolsProtocol):
    def shutdown(self) -> None:
        if self.cycle is None or self.cycle.response_complete:
            self.transport.abort()
        else:
            self.cycle.keep_alive = False
