"""One middleware renders every error as RFC 9457 ``application/problem+json`` with a stable code.

The domain raises :class:`exchange.errors.ExchangeError`; aiohttp's own HTTP errors (404 for an
unknown route, 405, 413) are mapped to the same shape; anything unexpected becomes a generic
500 whose detail is only in the record log. No traceback, SQL or key material reaches a client.
"""

from __future__ import annotations

import json
import sys
import traceback
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from exchange.errors import ExchangeError
from exchange.web.keys import RECORD, REQUEST_ID

PROBLEM_TYPE_BASE = "https://safeguarding-exchange.example/problems/"
PROBLEM_CONTENT_TYPE = "application/problem+json"

_HTTP_CODES = {
    400: ("request.invalid", "The request is not well formed"),
    401: ("auth.failed", "The request could not be authenticated"),
    403: ("auth.forbidden", "You are not allowed to do this"),
    404: ("not_found", "Not found"),
    405: ("request.method_not_allowed", "This method is not allowed here"),
    413: ("request.too_large", "The request body is too large"),
    415: ("request.unsupported_media_type", "The request body must be JSON"),
}


def problem_response(
    status: int,
    code: str,
    title: str,
    detail: str,
    request: web.Request,
    extras: dict[str, Any] | None = None,
) -> web.Response:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "instance": request.path,
    }
    request_id = request.get(REQUEST_ID)
    if request_id:
        body["request_id"] = request_id
    if extras:
        body.update({k: v for k, v in extras.items() if k not in body})
    return web.Response(status=status, text=json.dumps(body), content_type=PROBLEM_CONTENT_TYPE)


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ExchangeError as error:
        response = problem_response(error.status, error.code, error.title, error.detail, request, error.extras)
        if error.retry_after is not None:
            response.headers["Retry-After"] = str(error.retry_after)
        if error.status == 408:
            # RFC 9110 section 15.5.9: the connection is closed after a 408 (part of a body is unread).
            response.force_close()
        return response
    except web.HTTPException as error:
        if error.status < 400:
            raise
        code, title = _HTTP_CODES.get(error.status, ("http.error", error.reason))
        detail = error.reason
        if error.status == 413:
            detail = "The request body is larger than this server accepts."
        elif error.status == 404:
            detail = "There is nothing at this address."
        return problem_response(error.status, code, title, detail, request)
    except Exception as error:  # noqa: BLE001 - the last line of defence: never a traceback to the client
        # The traceback goes to the operator's console only: it may quote data, so never to the record.
        traceback.print_exc(file=sys.stderr)
        route = request.match_info.route.resource
        request.app[RECORD].log.error(
            "request.failed",
            error_type=type(error).__name__,
            # The route's pattern, never the concrete path: a path can hold anything a caller typed.
            route=route.canonical if route is not None else "unmatched",
            request_id=request.get(REQUEST_ID),
        )
        return problem_response(
            500,
            "server.error",
            "The exchange could not complete the request",
            "Something went wrong on the server. Nothing was changed. Quote the request id if you report it.",
            request,
        )
