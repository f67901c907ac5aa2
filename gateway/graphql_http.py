"""GraphQL over HTTP (the GraphQL-over-HTTP spec): GET for queries, POST for everything, no batching.

We answer HTTP ourselves instead of through Strawberry's view so that status codes and media types follow
the spec exactly (`application/graphql-response+json` gets 4xx for request errors) and so the hot path
stays short: one orjson parse, one execute, one orjson dump.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import strawberry
from graphql import GraphQLError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, Response
from strawberry.exceptions import MissingQueryError
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types import ExecutionResult
from strawberry.types.execution import PreExecutionError
from strawberry.types.graphql import OperationType

from gateway.bodies import BodyTooLarge, read_body
from gateway.documents import Document, DocumentGate, DocumentRequestError, requested_id
from gateway.graphiql import graphiql_headers, graphiql_html
from schema.compiled import CompiledQueries
from schema.errors import BAD_REQUEST, RATE_LIMITED, TRANSPORT_CODES, is_forbidden

logger = logging.getLogger(__name__)

GRAPHQL_RESPONSE = "application/graphql-response+json"
JSON = "application/json"
# Builds the request's context; may raise RequestError (401 for a missing or bad token).
ContextFactory = Callable[[Request, "GraphQLRequest"], Awaitable[Any]]


class RequestError(Exception):
    """The request is not a well-formed GraphQL request; no GraphQL work was done."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


@dataclass(frozen=True, slots=True)
class GraphQLRequest:
    query: str
    variables: dict[str, Any] | None
    operation_name: str | None
    extensions: dict[str, Any] | None
    # The trusted document the request named or sent (gateway.documents); None: ad-hoc text.
    document: Document | None = None


def negotiate(accept: str | None) -> str | None:
    """The response media type for an Accept header, or None when we can serve none it allows.

    Wildcards and a missing header get `application/json`: the spec's watershed rule, so legacy
    clients that never heard of `application/graphql-response+json` keep their 200s.
    """
    if not accept:
        return JSON
    best: tuple[float, int, str] | None = None
    for position, item in enumerate(accept.split(",")):
        media, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        media = media.lower()
        if media == GRAPHQL_RESPONSE:
            served = GRAPHQL_RESPONSE
        elif media in (JSON, "application/*", "*/*"):
            served = JSON
        else:
            continue
        if quality <= 0:
            continue
        candidate = (quality, -position, served)
        if best is None or candidate > best:
            best = candidate
    return best[2] if best else None


def _json_parameter(value: str | None, name: str) -> dict[str, Any] | None:
    if value is None or value == "":
        return None
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise RequestError(400, f"The {name} parameter is not valid JSON.") from None
    if parsed is not None and not isinstance(parsed, dict):
        raise RequestError(400, f"The {name} parameter must be a JSON object.")
    return parsed


def _from_mapping(data: Mapping[str, Any], gate: DocumentGate | None = None) -> GraphQLRequest:
    query = data.get("query")
    extensions = data.get("extensions")
    named = data.get("documentId") is not None or (
        isinstance(extensions, dict) and "persistedQuery" in extensions
    )
    if query is None and not named:
        raise RequestError(400, "The query parameter is missing.")
    if query is not None and (not isinstance(query, str) or not query.strip()):
        raise RequestError(400, "The query parameter must be a non-empty string.")
    variables = data.get("variables")
    if variables is not None and not isinstance(variables, dict):
        raise RequestError(400, "The variables parameter must be a JSON object.")
    operation_name = data.get("operationName")
    if operation_name is not None and not isinstance(operation_name, str):
        raise RequestError(400, "The operationName parameter must be a string.")
    if extensions is not None and not isinstance(extensions, dict):
        raise RequestError(400, "The extensions parameter must be a JSON object.")
    if gate is None:
        if query is None:
            raise RequestError(400, "This gateway has no trusted documents: send the query.")
        return GraphQLRequest(query, variables, operation_name, extensions)
    try:
        admitted = gate.resolve(query, requested_id(data.get("documentId"), extensions))
    except DocumentRequestError as error:
        raise RequestError(400, str(error)) from None
    return GraphQLRequest(admitted.text, variables, operation_name, extensions, admitted.document)


async def parse_request(
    request: Request, body_limit: int, gate: DocumentGate | None = None
) -> GraphQLRequest:
    """Raises RequestError, or GraphQLError for a document id the manifest does not have."""
    if request.method == "GET":
        params = request.query_params
        extensions = _json_parameter(params.get("extensions"), "extensions")
        if (
            "query" not in params
            and "documentId" not in params
            and "persistedQuery" not in (extensions or {})
        ):
            raise RequestError(400, "The query parameter is missing.")
        return _from_mapping(
            {
                "query": params.get("query"),
                "documentId": params.get("documentId"),
                "variables": _json_parameter(params.get("variables"), "variables"),
                "operationName": params.get("operationName") or None,
                "extensions": extensions,
            },
            gate,
        )
    content_type = request.headers.get("content-type", "")
    media, _, charset = content_type.partition(";")
    if media.strip().lower() != JSON:
        raise RequestError(415, "Send the request as application/json.")
    charset = charset.strip().lower()
    if charset and charset.replace(" ", "") not in ("charset=utf-8", 'charset="utf-8"'):
        raise RequestError(415, "Only utf-8 encoded requests are accepted.")
    try:
        body = await read_body(request, body_limit)
    except BodyTooLarge as error:
        raise RequestError(413, str(error)) from None
    if not body:
        raise RequestError(400, "The request body is empty.")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise RequestError(400, "The request body is not valid JSON.") from None
    if isinstance(data, list):
        raise RequestError(400, "Batched requests are not supported; send one operation per request.")
    if not isinstance(data, dict):
        raise RequestError(400, "The request body must be a JSON object.")
    return _from_mapping(data, gate)


def _trusted_id(request: GraphQLRequest) -> str | None:
    """The id of the trusted document the request runs (named or sent as text), else None."""
    return request.document.hash if request.document is not None else None


def _is_request_error(result: ExecutionResult) -> bool:
    """Parse, validation and variable errors: nothing executed, so the response has no `data`."""
    if isinstance(result, PreExecutionError):
        return True
    return result.data is None and bool(result.errors) and all(e.path is None for e in result.errors or ())


def error_body(message: str, code: str = BAD_REQUEST) -> bytes:
    """A transport error's body: `extensions.code` (schema.errors) lets clients branch without parsing."""
    return orjson.dumps({"errors": [{"message": message, "extensions": {"code": code}}]})


class GraphQLHTTP:
    """The `/graphql` HTTP endpoint."""

    def __init__(
        self,
        schema: strawberry.Schema,
        context_factory: ContextFactory,
        *,
        body_limit: int,
        graphiql: bool,
        compiled: CompiledQueries | None = None,
        documents: DocumentGate | None = None,
    ) -> None:
        self.schema = schema
        self.compiled = compiled
        self.documents = documents
        self.context_factory = context_factory
        self.body_limit = body_limit
        self.graphiql_html = graphiql_html() if graphiql else None

    async def handle(self, request: Request) -> Response:
        if request.method not in ("GET", "POST"):
            return Response(
                error_body("Use GET for queries or POST.", TRANSPORT_CODES[405]),
                405,
                {"Allow": "GET, POST"},
                JSON,
            )
        if self._wants_graphiql(request):
            assert self.graphiql_html is not None
            return HTMLResponse(self.graphiql_html, headers=graphiql_headers())
        media_type = negotiate(request.headers.get("accept"))
        if media_type is None:
            return Response(
                error_body(f"Accept {GRAPHQL_RESPONSE} or {JSON}.", TRANSPORT_CODES[406]),
                406,
                media_type=JSON,
            )
        try:
            graphql_request = await parse_request(request, self.body_limit, self.documents)
            context = await self.context_factory(request, graphql_request)
            principal = getattr(context, "principal", None)
            if self.documents is not None and principal is not None:  # None: public introspection only
                self.documents.admit(graphql_request.document, principal)
            result = await self._execute(request.method, graphql_request, context)
        except RequestError as error:
            return Response(
                error_body(error.message, TRANSPORT_CODES.get(error.status, BAD_REQUEST)),
                error.status,
                error.headers,
                media_type=f"{media_type}; charset=utf-8",
            )
        except GraphQLError as error:
            # An unknown or untrusted document: a GraphQL request error, answered as validation errors
            # are (200 with application/json, 400 with application/graphql-response+json).
            return Response(
                orjson.dumps({"errors": [error.formatted]}),
                400 if media_type == GRAPHQL_RESPONSE else 200,
                media_type=f"{media_type}; charset=utf-8",
            )
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is left to read an answer
        except Exception:
            # Resolver faults are masked inside the result; this catches what escapes around it
            # (context creation, an extension) so no traceback or SQL ever reaches the client.
            logger.exception("GraphQL request failed outside execution")
            return Response(
                error_body("Internal server error.", TRANSPORT_CODES[500]),
                500,
                media_type=f"{media_type}; charset=utf-8",
            )
        return self._respond(result, media_type)

    def _wants_graphiql(self, request: Request) -> bool:
        if self.graphiql_html is None or request.method != "GET" or "query" in request.query_params:
            return False
        return "text/html" in request.headers.get("accept", "")

    async def _execute(self, method: str, request: GraphQLRequest, context: Any) -> ExecutionResult:
        allowed = {OperationType.QUERY} if method == "GET" else {OperationType.QUERY, OperationType.MUTATION}
        compiled = self.compiled
        if compiled is not None:
            # Validated query documents run from their plan; anything else (and any plan that meets an
            # error it does not answer itself) runs below, through graphql-core.
            # A trusted document is keyed by its id: nothing of the text is hashed again.
            answer = await compiled.execute(
                request.query,
                request.variables,
                request.operation_name,
                context,
                request.extensions,
                _trusted_id(request),
            )
            if answer is not None:
                return answer
        try:
            result = await self.schema.execute(
                request.query,
                variable_values=request.variables,
                context_value=context,
                operation_name=request.operation_name,
                allowed_operation_types=allowed,
                operation_extensions=request.extensions,
            )
        except InvalidOperationTypeError as error:
            if method == "GET" and error.operation_type == OperationType.MUTATION:
                raise RequestError(405, "Mutations are only accepted over POST.", {"Allow": "POST"}) from None
            raise RequestError(
                400, f"{error.operation_type.value} operations are not served over HTTP."
            ) from None
        except CannotGetOperationTypeError:
            raise RequestError(400, "Name the operation to run with operationName.") from None
        except MissingQueryError:
            raise RequestError(400, "The query parameter must be a non-empty string.") from None
        if compiled is not None:
            compiled.learn(
                request.query,
                request.operation_name,
                context,
                not _is_request_error(result),
                _trusted_id(request),
            )
        return result

    def _respond(self, result: ExecutionResult, media_type: str) -> Response:
        body: dict[str, Any]
        status = 200
        refused = _refused_write(result)
        if refused is not None:
            status, headers = refused
            body = {"errors": [_format(error) for error in result.errors or ()]}
            return Response(orjson.dumps(body), status, headers, media_type=f"{media_type}; charset=utf-8")
        if _is_request_error(result):
            body = {"errors": [_format(error) for error in result.errors or ()]}
            if media_type == GRAPHQL_RESPONSE:
                status = 400
        else:
            body = {"data": result.data}
            if result.errors:
                body["errors"] = [_format(error) for error in result.errors]
            if result.data is None and _denied(result):
                # Denied outright: nothing of the operation could be answered (DESIGN.md).
                status = 403
        if result.extensions:
            body["extensions"] = result.extensions
        return Response(orjson.dumps(body), status, media_type=f"{media_type}; charset=utf-8")


_REFUSED_WRITES = {
    # schema.active_token: the issuer's introspection said no, or could not be asked.
    "UNAUTHENTICATED": (
        401,
        {"WWW-Authenticate": 'Bearer error="invalid_token", error_description="token not active"'},
    ),
    "SERVICE_UNAVAILABLE": (503, {"Retry-After": "5"}),
}


def _refused_write(result: ExecutionResult) -> tuple[int, dict[str, str]] | None:
    if result.data is not None or not result.errors:
        return None
    extensions = result.errors[0].extensions or {}
    if extensions.get("code") == RATE_LIMITED:  # schema.cost: the caller's budget is spent
        return 429, {"Retry-After": str(extensions.get("retryAfter", 60))}
    return _REFUSED_WRITES.get(extensions.get("code", ""))


def _denied(result: ExecutionResult) -> bool:
    return any(is_forbidden(error) for error in result.errors or ())


def _format(error: GraphQLError) -> dict[str, Any]:
    return error.formatted  # type: ignore[return-value]
