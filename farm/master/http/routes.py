"""The control API's routes: each one declares its models and handler in a `Route`.

Sits under farm.master.http.app (which assembles the app) and farm.master.http.openapi (which
describes it). A route names the pydantic models of its path parameters, its query, its
JSON body and its answer; `add_routes` validates every request against them before the
handler runs, and the OpenAPI document is generated from the same models, so what is
documented is what is enforced. A module that adds routes (servers, values, faults, ...)
builds a list of `Route`s and hands it to `add_routes`:

    async def get_thing(call: Call) -> Thing:
        path = call.path_as(ThingPath)
        return Thing(...)                       # or raise NotFound("no thing named ...")

    Route(method="GET", path="/api/v1/things/{name}", handler=get_thing,
          summary="One thing", path_model=ThingPath, response=Thing, errors=(404,))

Errors are JSON `{"error": "..."}`: a request that fails validation gets 422 naming the
field ("query 'limit': ..."), a body that is not JSON 400, and a handler raises `ApiError`
(`NotFound`, `Conflict`, `Invalid`) with a message that says what to fix. A route whose
answer is not JSON (/metrics) returns an aiohttp response itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from farm.errors import InputError
from farm.files import decode, parse

M = TypeVar("M", bound=BaseModel)
Method = Literal["GET", "POST", "PUT", "DELETE"]
Handler = Callable[["Call"], Awaitable[BaseModel | web.StreamResponse]]
ROUTES_KEY: web.AppKey[list[Route]] = web.AppKey("farm.routes")


class ApiError(Exception):
    """Raised by a handler: the client gets `status` and `{"error": message}`."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ApiError):
    """An unknown server, unit, point, fault id...: the message names it."""

    status = 404


class Conflict(ApiError):
    """The request is valid but the farm cannot do it now (a port taken meanwhile, ...)."""

    status = 409


class Unavailable(ApiError):
    """The farm cannot take this now, and may later (a limit on open streams, ...)."""

    status = 503


class Invalid(ApiError):
    """A value the models accept but the target does not (out of a table, too big a type)."""

    status = 422


class ErrorBody(BaseModel):
    """Every error the API answers."""

    error: str


class Strict(BaseModel):
    """Base for request models: an unknown field is an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """One endpoint: method, aiohttp path, handler, and the models the API checks and documents."""

    method: Method
    path: str
    handler: Handler
    summary: str
    path_model: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    # Parses the JSON body instead of `body.model_validate` (raising ApiError), for a body
    # whose own errors say more (a union of models: farm.master.http.faults).
    body_parser: Callable[[Any], BaseModel] | None = None
    response: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()  # statuses the handler may answer, for the document
    content_type: str = "application/json"  # of a 200 answer; others return web responses
    tag: str = "farm"
    description: str = ""

    @property
    def operation_id(self) -> str:
        return self.handler.__name__.strip("_")

    @property
    def mutating(self) -> bool:
        return self.method != "GET"


@dataclass(frozen=True, slots=True)
class Call:
    """A validated request, as a handler sees it."""

    request: web.Request
    path: BaseModel | None
    query: BaseModel | None
    body: BaseModel | None

    def path_as(self, model: type[M]) -> M:
        return _as(model, self.path)

    def query_as(self, model: type[M]) -> M:
        return _as(model, self.query)

    def body_as(self, model: type[M]) -> M:
        return _as(model, self.body)


def _as(model: type[M], value: BaseModel | None) -> M:
    if not isinstance(value, model):
        raise TypeError(f"the route did not declare {model.__name__}")
    return value


def error_response(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def describe_validation(where: str, error: ValidationError) -> str:
    """'body 'values.2': Input should be ...; ...': every problem, each naming its field."""
    problems = []
    for problem in error.errors(include_url=False):
        field = ".".join(str(part) for part in problem["loc"]) or where
        message = str(problem["msg"])
        if problem["type"] == "extra_forbidden":
            message = "unknown field; check its spelling against /api/v1/openapi.json"
        problems.append(f"{where} '{field}': {message}")
    return "; ".join(problems)


def _validate(model: type[BaseModel] | None, where: str, data: Any) -> BaseModel | None:
    if model is None:
        return None
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise Invalid(describe_validation(where, error)) from error


async def _body(route: Route, request: web.Request) -> BaseModel | None:
    if route.body is None:
        return None
    # At most files.BODY_BYTES (the app's client_max_size: 413 past it), read by the rules
    # of farm.files: UTF-8, JSON nested at most files.MAX_DEPTH deep, each error one line.
    raw = await request.read()
    try:
        text = decode(raw, "body")
        data = parse(text, "json", "body") if text.strip() else {}
    except InputError as error:
        raise ApiError(f"{error}; send a JSON object") from error
    if route.body_parser is not None:
        return route.body_parser(data)
    return _validate(route.body, "body", data)


def _query(request: web.Request) -> Mapping[str, str]:
    query = request.query
    repeated = sorted({key for key in query if len(query.getall(key)) > 1})
    if repeated:
        raise ApiError(f"query '{repeated[0]}' is given more than once; give it once")
    return dict(query)


def _wrap(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            call = Call(
                request=request,
                path=_validate(route.path_model, "path", dict(request.match_info)),
                query=_validate(route.query, "query", _query(request)),
                body=await _body(route, request),
            )
            answer = await route.handler(call)
        except ApiError as error:
            return error_response(error.status, error.message)
        if isinstance(answer, web.StreamResponse):
            return answer
        return web.Response(text=answer.model_dump_json(), content_type="application/json")

    handle.__name__ = route.operation_id
    return handle


def add_routes(app: web.Application, routes: Iterable[Route]) -> None:
    """Serve `routes` on `app` and remember them for the OpenAPI document."""
    served: list[Route] = app.setdefault(ROUTES_KEY, [])
    for route in routes:
        app.router.add_route(route.method, route.path, _wrap(route))
        served.append(route)


def document(app: web.Application, routes: Iterable[Route]) -> None:
    """Put `routes` in the OpenAPI document of `app` without serving them there (another
    application in front serves them: farm.master.http.core)."""
    app.setdefault(ROUTES_KEY, []).extend(routes)


def served_routes(app: web.Application) -> list[Route]:
    """Every route `add_routes` put on `app`, in order."""
    routes: list[Route] = app.get(ROUTES_KEY, [])
    return routes
