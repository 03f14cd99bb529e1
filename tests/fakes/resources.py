"""The stateful part of the fake Gemini API: Files, context caches, Batch mode, Imagen and Veo.

``FakeGemini`` holds one ``Resources`` (``fake.resources``, new on every ``fake.reset()``) and
asks it to name, authorise and answer requests; everything here runs under ``env.lock``.

    fake.resources.batches.polls_per_state = None       # batches move only when told
    fake.resources.batches.finish("batches/abc")         # ... now
    fake.resources.env.clock = lambda: frozen            # cache / file expiry on a test's clock

Routes are served under ``/v1beta`` and ``/v1`` (google-genai 3.x calls ``/v1``), uploads under
``/upload/{v}/files``, downloads under ``/{v}/files/{id}:download`` and
``/download/{v}/files/{id}:download``. Scripted replies (``fake.enqueue(..., action=...)``) take
the actions named in ``action()``: ``files.upload``, ``cachedContents.create``, ``batches.get``,
``operations.get``, ... as well as the model routes' ``batchGenerateContent``, ``predict``, ...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from tests.fakes.batches import Batches
from tests.fakes.caches import Caches, file_uris
from tests.fakes.files import Files
from tests.fakes.gemini import JsonReply, RecordedRequest
from tests.fakes.media import Media
from tests.fakes.rest import Env, Route, json_body, split_path

# Routes that carry no API key: the upload session URL (its id is the credential) and the
# storage URL a download may redirect to.
_KEYLESS = {"files.uploadChunk", "files.storage"}
_MODEL_ACTIONS = {
    "batchGenerateContent": "batches",
    "asyncBatchEmbedContent": "batches",
    "predict": "media",
    "predictLongRunning": "media",
}
_GENERATE = {"generateContent", "streamGenerateContent", "countTokens"}


class _Server(Protocol):
    def serve(self, req: RecordedRequest, route: Route) -> JsonReply: ...


class Resources:
    def __init__(self) -> None:
        self.env = Env()
        self.files = Files(self.env)
        self.caches = Caches(self.env, self.files)
        self.batches = Batches(self.env, self.files, self.caches)
        self.media = Media(self.env, self.files)
        self._servers: dict[str, _Server] = {
            "files": self.files,
            "cachedContents": self.caches,
            "batches": self.batches,
            "operations": self.media,
            "media": self.media,
        }

    def action(self, req: RecordedRequest) -> str | None:
        """The name of a resource request (None for routes this module does not serve)."""
        if req.path.startswith("/_fake_storage/") and req.method == "GET":
            return "files.storage"
        route = split_path(req)
        if route is None or not route.parts:
            return None
        return (
            Files.action(req.method, route, req.query)
            or Caches.action(req.method, route)
            or Batches.action(req.method, route)
            or Media.action(req.method, route)
        )

    @staticmethod
    def keyless(req: RecordedRequest) -> bool:
        return req.action in _KEYLESS

    @staticmethod
    def own_body(req: RecordedRequest) -> bool:
        """Whether this module reads the body itself (uploads are not JSON; cancel has none)."""
        return req.action is not None and req.action.split(".")[0] in (
            "files",
            "cachedContents",
            "batches",
            "operations",
        )

    def serve(self, req: RecordedRequest, builtin: Callable[[RecordedRequest], Any]) -> Any:
        """The reply to ``req``: a resource route's, or ``builtin``'s (amended for a cache)."""
        with self.env.lock:
            if req.action == "files.storage":
                f = self.files.lookup(req.path.split("?")[0].rsplit("/", 1)[-1])
                return self.files.download(req, f) if f else builtin(req)
            route = split_path(req)
            action = req.action or ""
            server = self._servers.get(_MODEL_ACTIONS.get(action) or action.split(".")[0])
            if server is not None and route is not None:
                return server.serve(req, route)
            if req.action in _GENERATE and req.method == "POST":
                return self._generate(req, builtin)
            return builtin(req)

    def _generate(self, req: RecordedRequest, builtin: Callable[[RecordedRequest], Any]) -> Any:
        body = json_body(req)
        if isinstance(body, JsonReply):
            return builtin(req)
        for uri in file_uris(body):
            if refused := self.files.check_uri(uri):
                return refused
        if refused := self.caches.check_use(body, req.model):
            return refused
        reply = builtin(req)
        tokens = self.caches.cached_tokens(body)
        return self.caches.amend(reply, tokens) if tokens else reply
