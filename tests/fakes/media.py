"""Imagen and Veo as the Gemini API serves them, faked.

Imagen: ``POST models/{imagen-*}:predict`` with ``{"instances": [{"prompt"}], "parameters":
{"sampleCount": 1-4 (default 4), "aspectRatio", ...}}`` answers ``{"predictions": [{"mimeType":
"image/png", "bytesBase64Encoded"}]}``, one per image made. Images the safety filter removed are
left out, or listed as ``{"raiFilteredReason"}`` when the request set ``includeRaiReason``.

Veo: ``POST models/{veo-*}:predictLongRunning`` with ``{"instances": [{"prompt"}], "parameters":
{"durationSeconds", "aspectRatio", "sampleCount", ...}}`` answers ``{"name":
"models/{model}/operations/{id}"}``; ``GET /{v}/{that name}`` polls it until ``"done": true`` with
``response.generateVideoResponse.generatedSamples[].video.uri`` (a Files API download URI). The
reply names no duration: it is the request's ``durationSeconds`` (default 8).
"""

from __future__ import annotations

import base64
import struct
import zlib
from dataclasses import dataclass
from typing import Any

from tests.fakes.files import Files
from tests.fakes.gemini import JsonReply, RecordedRequest
from tests.fakes.rest import Env, Route, get, google_error, json_body, new_id, no_route

IMAGEN_ASPECTS = {"1:1": (1, 1), "3:4": (3, 4), "4:3": (4, 3), "9:16": (9, 16), "16:9": (16, 9)}
VEO_ASPECTS = {"16:9", "9:16"}
VEO_DEFAULT_SECONDS = 8
VEO_RESPONSE = "type.googleapis.com/google.ai.generativelanguage.v1beta.PredictLongRunningResponse"
RAI_REASON = "Filtered by the fake's safety filter (Resources.media.filtered)."


def png(width: int, height: int) -> bytes:
    """A valid, tiny RGB PNG of ``width`` x ``height`` grey pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = b"".join(b"\x00" + b"\x80" * 3 * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _unsupported(model: str, version: str, method: str) -> JsonReply:
    return google_error(
        404,
        f"models/{model} is not found for API version {version}, or is not "
        f"supported for {method}. Call ListModels to see the list of available "
        "models and their supported methods.",
    )


def _count(params: dict[str, Any], default: int, top: int) -> int | JsonReply:
    n = get(params, "sampleCount")
    n = default if n is None else n
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= top:
        return google_error(400, f"sampleCount must be an integer from 1 to {top}, not {n!r}.")
    return n


@dataclass
class VideoOperation:
    name: str  # "models/veo-3.0-generate-001/operations/abc123"
    seconds: int
    count: int
    polls: int = 0
    done: bool = False
    result: dict[str, Any] | None = None  # "response" or "error", once done

    def resource(self) -> dict[str, Any]:
        return {"name": self.name} | ({"done": True} | (self.result or {}) if self.done else {})


class Media:
    def __init__(self, env: Env, files: Files) -> None:
        self.env, self.files = env, files
        self.operations: dict[str, VideoOperation] = {}
        self.filtered = 0  # images / videos per call the safety filter removes
        self.polls_until_done: int | None = 1  # None: only finish() ends an operation
        self.video_error: dict[str, Any] | None = None  # a google.rpc.Status to end with

    @staticmethod
    def action(method: str, route: Route) -> str | None:
        match route.parts:
            case ["models", _, "operations", _] if method == "GET" and not route.verb:
                return "operations.get"
        return None

    def serve(self, req: RecordedRequest, route: Route) -> JsonReply:
        if req.action == "operations.get":
            op = self.operations.get("/".join(route.parts))
            if op is None:
                return google_error(404, f"Operation {'/'.join(route.parts)} not found.")
            if not op.done and self.polls_until_done is not None:
                op.polls += 1
                if op.polls >= self.polls_until_done:
                    self.finish(op.name)
            return JsonReply(op.resource())
        model = route.parts[1]
        body = json_body(req)
        if isinstance(body, JsonReply):
            return body
        instances, params = get(body, "instances"), get(body, "parameters") or {}
        if not isinstance(instances, list) or not instances or not isinstance(params, dict):
            return google_error(400, "instances must be a non-empty list, parameters an object.")
        if req.action == "predict":
            if not model.startswith("imagen"):
                return _unsupported(model, route.version, "predict")
            return self._images(instances, params)
        if req.action == "predictLongRunning":
            if not model.startswith("veo"):
                return _unsupported(model, route.version, "predictLongRunning")
            return self._video(model, instances, params)
        return no_route(req)

    def _images(self, instances: list[Any], params: dict[str, Any]) -> JsonReply:
        n = _count(params, 4, 4)
        aspect = get(params, "aspectRatio") or "1:1"
        if isinstance(n, JsonReply):
            return n
        if aspect not in IMAGEN_ASPECTS:
            return google_error(400, f"Unsupported aspectRatio {aspect!r}.")
        if not all(isinstance(i, dict) and isinstance(get(i, "prompt"), str) for i in instances):
            return google_error(400, "Each instance needs a prompt.")
        image = {
            "bytesBase64Encoded": base64.b64encode(png(*IMAGEN_ASPECTS[aspect])).decode(),
            "mimeType": "image/png",
        }
        kept = max(0, n - self.filtered)
        reasons = (
            [{"raiFilteredReason": RAI_REASON}] * (n - kept)
            if get(params, "includeRaiReason")
            else []
        )
        predictions = ([image] * kept + reasons) * len(instances)
        return JsonReply({"predictions": predictions} if predictions else {})

    def _video(self, model: str, instances: list[Any], params: dict[str, Any]) -> JsonReply:
        first = instances[0]
        if not isinstance(first, dict) or not (get(first, "prompt") or get(first, "image")):
            return google_error(400, "instances[0] needs a prompt or an image.")
        raw = get(params, "durationSeconds")
        try:
            secs = VEO_DEFAULT_SECONDS if raw is None else int(raw)
        except (TypeError, ValueError):
            secs = -1
        allowed = range(5, 9) if model.startswith("veo-2") else (4, 6, 8)
        if secs not in allowed:
            return google_error(
                400, f"durationSeconds {raw!r} is out of range for {model}: {list(allowed)}."
            )
        if (aspect := get(params, "aspectRatio") or "16:9") not in VEO_ASPECTS:
            return google_error(400, f"Unsupported aspectRatio {aspect!r}.")
        n = _count(params, 1, 4)
        if isinstance(n, JsonReply):
            return n
        op = VideoOperation(f"models/{model}/operations/{new_id()}", secs, n)
        self.operations[op.name] = op
        return JsonReply(op.resource())

    def finish(self, name: str) -> VideoOperation:
        """End a video operation now: with ``video_error`` if set, else with its videos."""
        with self.env.lock:
            op = self.operations[name]
            if op.done:
                return op
            op.done = True
            if self.video_error is not None:
                op.result = {"error": self.video_error}
                return op
            kept = max(0, op.count - self.filtered)
            samples = []
            for i in range(kept):
                data = b"\x00\x00\x00\x18ftypmp42" + f"fake {op.seconds}s video {i}".encode()
                f = self.files.add(data, "video/mp4", source="GENERATED")
                uri = f"{self.env.origin}/v1beta/{f.name}:download?alt=media"
                samples.append({"video": {"uri": uri}})
            response: dict[str, Any] = {"generatedSamples": samples} if samples else {}
            if kept < op.count:
                response |= {
                    "raiMediaFilteredCount": op.count - kept,
                    "raiMediaFilteredReasons": [RAI_REASON],
                }
            op.result = {"response": {"@type": VEO_RESPONSE, "generateVideoResponse": response}}
            return op
