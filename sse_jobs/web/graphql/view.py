"""``/graphql`` over HTTP (POST, JSON) and over WebSocket (``graphql-transport-ws``), on
strawberry's aiohttp view; ``/graphql/schema.graphql`` serves the SDL.

What this adds to the view: the context (who asks, from ``Authorization`` or from
``connection_init``'s payload), the WebSocket of ``sockets`` (pings, no compression,
every frame bounded by ``--send-timeout``, 1013/1012 closes, closed at shutdown), JSON
by orjson, problem+json for a request that is no GraphQL request at all, and no GraphiQL
page (it would load its scripts from a CDN).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web
from cross_web import AsyncHTTPRequestAdapter, HTTPException
from strawberry.aiohttp.views import AiohttpWebSocketAdapter, GraphQLView
from strawberry.exceptions import ConnectionRejectionError, MissingQueryError
from strawberry.http import GraphQLRequestData
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType

from sse_jobs.config import Settings
from sse_jobs.web import sockets
from sse_jobs.web.graphql.context import Context, principal_of
from sse_jobs.web.graphql.schema import SCHEMA
from sse_jobs.web.keys import ACCESS, SETTINGS, SOCKETS
from sse_jobs.web.middleware import problem
from sse_jobs.web.sockets import Connection

GRAPHQL = "/graphql"
SCHEMA_PATH = "/graphql/schema.graphql"
CONNECTION = web.RequestKey("graphql_connection", Connection)
CONNECTION_INIT_WAIT = timedelta(seconds=10)  # then 4408, as graphql-transport-ws says
SUBSCRIPTIONS_PER_CONNECTION = 100
HTTP_OPERATIONS = {OperationType.QUERY, OperationType.MUTATION}


def add_routes(app: web.Application) -> None:
    view = View(app[SETTINGS])
    app.add_routes([
        web.get(GRAPHQL, view, allow_head=False, name="graphql_ws"),
        web.post(GRAPHQL, view, name="graphql"),
        web.get(SCHEMA_PATH, schema_sdl, allow_head=False),
    ])


async def schema_sdl(request: web.Request) -> web.Response:
    """``GET /graphql/schema.graphql``: the schema in the GraphQL SDL."""
    return web.Response(text=SCHEMA.as_str() + "\n", content_type="text/plain",
                        charset="utf-8")


class Adapter(AiohttpWebSocketAdapter):
    """Sends each message through the connection: text frames, bounded by
    ``--send-timeout``; a message for a closing connection is dropped (its client
    resubscribes from what it received)."""

    async def send_json(self, message: Mapping[str, object]) -> None:
        await self.request[CONNECTION].send(orjson.dumps(message))


class View(GraphQLView[Context, None]):
    """strawberry's aiohttp view with our context, auth, WebSocket and errors."""

    websocket_adapter_class = Adapter

    def __init__(self, settings: Settings) -> None:
        super().__init__(
            schema=SCHEMA, graphql_ide=None, allow_queries_via_get=False,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
            connection_init_wait_timeout=CONNECTION_INIT_WAIT,
            max_subscriptions_per_connection=SUBSCRIPTIONS_PER_CONNECTION,
            allowed_origins=settings.cors_origin)
        self._settings = settings

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self.run(request=request)
        except HTTPException as exc:
            return problem(exc.status_code, HTTPStatus(exc.status_code).phrase, exc.reason,
                           "graphql-request")
        finally:
            connection = request.get(CONNECTION)
            if connection is not None:
                await connection.close(sockets.NORMAL)
                request.app[SOCKETS].discard(connection)

    async def get_context(self, request: web.Request,
                          response: web.Response | web.WebSocketResponse) -> Context:
        principal = principal_of(request.app[ACCESS], request.headers.get("Authorization"))
        return Context(request, response, principal, request.get(CONNECTION))

    async def on_ws_connect(self, context: Context) -> None:
        """``connection_init``: its payload's ``Authorization``, else the handshake's header.
        With API tokens configured and neither valid, the server closes with 4403."""
        given = context.connection_params.get("Authorization")
        if given is not None:
            context.principal = principal_of(context.access, given)
        if context.principal is None:
            raise ConnectionRejectionError({"message": "send a valid API token"})

    async def create_websocket_response(self, request: web.Request,
                                        subprotocol: str | None) -> web.WebSocketResponse:
        ws = sockets.response(self._settings, max_msg_size=self._settings.max_body,
                              protocols=(subprotocol,) if subprotocol else ())
        await ws.prepare(request)
        connection = Connection(request, ws, self._settings.send_timeout)
        request[CONNECTION] = connection
        request.app[SOCKETS].add(connection)
        return ws

    async def reject_websocket(self, request: web.Request) -> web.Response:
        origin = request.headers.get("Origin")
        return problem(403, "Forbidden", f"origin {origin!r} is not allowed", "cors")

    async def execute_single(
        self, request: web.Request, request_adapter: AsyncHTTPRequestAdapter,
        sub_response: web.Response, context: Context, root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        """One query or mutation over HTTP; a subscription is refused with 400 (it runs over
        the WebSocket: strawberry would stream it over HTTP, which we do not offer)."""
        try:
            return await self.schema.execute(
                request_data.query, root_value=root_value,
                variable_values=request_data.variables, context_value=context,
                operation_name=request_data.operation_name,
                allowed_operation_types=HTTP_OPERATIONS,
                operation_extensions=request_data.extensions)
        except InvalidOperationTypeError:
            raise HTTPException(400, "subscriptions run over a WebSocket, with "
                                     "graphql-transport-ws") from None
        except CannotGetOperationTypeError as exc:
            raise HTTPException(400, exc.as_http_error_reason()) from None
        except MissingQueryError:
            raise HTTPException(400, "no GraphQL query found in the request") from None

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)

    def decode_json(self, data: str | bytes) -> Any:
        return orjson.loads(data)

