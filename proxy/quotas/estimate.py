"""A call's worst case before it goes upstream: prompt tokens, maximum output, maximum cost.

The prompt is estimated at 4 characters a token, rounded up (proxy.estimate), over
every string that reaches the model — text, system instruction, tool declarations, function
calls and responses — plus an allowance per media part. The output is bounded by the request's
``maxOutputTokens`` (Gemini stops there, thoughts included) times ``candidateCount``, else by
the model's cap from the catalog, else by :data:`DEFAULT_MAX_OUTPUT_TOKENS`. The cost is that
usage priced by the catalog at the dearest output rate the model has (thinking, audio, image),
in the long-context tier when the estimate passes the threshold. See docs/quotas.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import ROUND_CEILING, Decimal
from typing import Any

from ..estimate import CHARS_PER_TOKEN
from ..pricing.catalog import Catalog
from ..pricing.cost import FREE_OPERATIONS, PricingError, compute_cost, price_call
from ..pricing.prices import ModelPrice
from ..usage import Usage

__all__ = [
    "DEFAULT_MAX_OUTPUT_TOKENS",
    "MEDIA_BYTES_PER_TOKEN",
    "MEDIA_MIN_TOKENS",
    "NO_OUTPUT_OPERATIONS",
    "UNMETERED_OPERATIONS",
    "Estimate",
    "batch_estimate",
    "batch_factor",
    "estimate_call",
    "estimate_tokens",
    "max_output_tokens",
    "prompt_tokens",
]

# Gemini 2.5's output cap, for models whose cap the catalog does not give.
DEFAULT_MAX_OUTPUT_TOKENS = 65_536
# An inline media part counts max(MEDIA_MIN_TOKENS, decoded bytes / MEDIA_BYTES_PER_TOKEN):
# Gemini bills 258 tokens per image tile or PDF page, 32 per second of audio, 263 per second of
# video; 1 token per 64 bytes bounds audio down to 16 kbit/s and video down to 135 kbit/s, and
# 1,290 covers a picture of up to five tiles. A file URI's size is unknown: MEDIA_MIN_TOKENS.
MEDIA_MIN_TOKENS = 1_290
MEDIA_BYTES_PER_TOKEN = 64
NO_OUTPUT_OPERATIONS = frozenset({"embedContent", "batchEmbedContents", "countTokens"})
# Calls Google does not bill: no budget, token or rate limit applies, only the allowed models.
UNMETERED_OPERATIONS = FREE_OPERATIONS

# Request fields that never reach the model as tokens.
_SKIP = frozenset(
    {
        "generationConfig", "generation_config", "safetySettings", "safety_settings",
        "toolConfig", "tool_config", "cachedContent", "cached_content", "model", "labels",
    }
)  # fmt: skip
# Structural keys of the request shape: their names are not tokens (schema keys are).
_STRUCTURE = frozenset(
    {
        "contents", "content", "parts", "role", "text", "systemInstruction",
        "system_instruction", "tools", "functionDeclarations", "function_declarations",
        "functionCall", "function_call", "functionResponse", "function_response", "requests",
        "thought", "thoughtSignature", "thought_signature", "taskType", "task_type",
    }
)  # fmt: skip
_INLINE = frozenset({"inlineData", "inline_data"})
_USD_QUANTUM = Decimal("1e-10")
_FILE = frozenset({"fileData", "file_data"})


@dataclass(frozen=True, slots=True)
class Estimate:
    prompt_tokens: int
    audio_tokens: int  # part of prompt_tokens: inline audio, priced apart by some models
    max_output_tokens: int
    cost_usd: Decimal | None  # the worst case; None when the catalog cannot price the model

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.max_output_tokens


def _media_tokens(part: Mapping[str, Any]) -> tuple[int, bool]:
    mime = str(part.get("mimeType") or part.get("mime_type") or "")
    data = part.get("data")
    size = len(data) * 3 // 4 if isinstance(data, str) else 0  # base64 -> bytes
    return max(MEDIA_MIN_TOKENS, math.ceil(size / MEDIA_BYTES_PER_TOKEN)), mime.startswith("audio/")


def prompt_tokens(body: Any) -> tuple[int, int]:
    """(prompt tokens, of which inline audio) estimated from a Gemini request body."""
    chars = media = audio = 0
    stack: list[Any] = [body]
    while stack:
        node = stack.pop()
        if isinstance(node, Mapping):
            for k, v in node.items():
                if k in _SKIP:
                    continue
                if k in _INLINE and isinstance(v, Mapping):
                    n, is_audio = _media_tokens(v)
                    media += n
                    audio += n if is_audio else 0
                elif k in _FILE:
                    media += MEDIA_MIN_TOKENS
                else:
                    chars += 0 if k in _STRUCTURE else len(str(k))
                    stack.append(v)
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str):
            chars += len(node)
        elif node is not None:
            chars += len(str(node))
    return -(-chars // CHARS_PER_TOKEN) + media, audio


def _positive_int(config: Mapping[str, Any], *names: str) -> int | None:
    for name in names:
        value = config.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def max_output_tokens(body: Mapping[str, Any], cap: int | None, operation: str) -> int:
    if operation in NO_OUTPUT_OPERATIONS:
        return 0
    config = body.get("generationConfig") or body.get("generation_config") or {}
    if not isinstance(config, Mapping):
        config = {}
    asked = _positive_int(config, "maxOutputTokens", "max_output_tokens")
    limit = cap or DEFAULT_MAX_OUTPUT_TOKENS
    per_candidate = min(asked, limit) if asked is not None else limit
    return per_candidate * (_positive_int(config, "candidateCount", "candidate_count") or 1)


@dataclass(frozen=True, slots=True)
class _Rates:
    """USD per token of one price in one tier, exact; None where the price cannot bill it."""

    nothing: bool  # an empty call can be priced (at $0): False for media-priced models
    text_in: Decimal | None  # a prompt token, text (or whatever the input rate covers)
    audio_in: Decimal | None  # a prompt token of inline audio
    out: Decimal | None  # an output token at the dearest output rate the model has


_RATES: dict[tuple[object, ...], _Rates] = {}


def _exact(usage: Usage, price: ModelPrice) -> Decimal | None:
    try:
        return sum((line.usd for line in compute_cost(usage, price).lines), Decimal(0))
    except PricingError:
        return None


def _rates(price: ModelPrice, long: bool) -> _Rates:
    """A call's cost is linear in its token counts within a tier (discounts included), so the
    cost engine itself, asked once per price and tier, gives the rates of the worst case."""
    key = (price.id, price.price_list, price.price_version, price.effective_from,
           price.discount, long)  # fmt: skip
    rates = _RATES.get(key)
    if rates is not None:
        return rates
    n = (price.long_context_threshold or 0) + 1 if long else 1  # a prompt in this tier
    bases = [Usage(prompt_tokens=n), Usage(prompt_tokens=n, audio_prompt_tokens=n)]
    text, audio = (_exact(u, price) for u in bases)
    outs = []
    for base, cost in zip(bases, (text, audio), strict=True):
        if cost is None:
            continue
        for out in (
            replace(base, output_tokens=1),
            replace(base, thinking_tokens=1),
            replace(base, output_tokens=1, output_audio_tokens=1),
            replace(base, output_tokens=1, output_image_tokens=1),
        ):
            more = _exact(out, price)
            if more is not None:  # a rate this model lacks: an output it cannot produce
                outs.append(more - cost)
        break
    rates = _RATES[key] = _Rates(
        _exact(Usage(), price) is not None,
        None if text is None else text / n,
        None if audio is None else audio / n,
        max(outs) if outs else None,
    )
    return rates


_PRICES: dict[tuple[int, str, date], ModelPrice | None] = {}


def _price(catalog: Catalog, model: str) -> ModelPrice | None:
    """``catalog.resolve(model)`` for today, looked up once a day per model (a call's hot path)."""
    key = (id(catalog), model, datetime.now(UTC).date())
    if key not in _PRICES:
        if len(_PRICES) > 4096:  # a client may send any model name: keep this bounded
            _PRICES.clear()
        _PRICES[key] = catalog.resolve(model)
    return _PRICES[key]


def _worst_cost(price: ModelPrice | None, prompt: int, audio: int, out: int) -> Decimal | None:
    """The dearest way the call could be billed: its prompt as text, or with its audio part
    as audio; its output at the dearest output rate; rounded up to the ledger's 1e-10 USD."""
    if price is None:
        return None
    threshold = price.long_context_threshold
    r = _rates(price, threshold is not None and prompt > threshold)
    if not r.nothing or (out and r.out is None):
        return None
    text = prompt - audio
    inputs: list[Decimal] = []
    if not prompt or r.text_in is not None:
        inputs.append(prompt * (r.text_in or Decimal(0)))
    if audio and r.audio_in is not None and (not text or r.text_in is not None):
        inputs.append(text * (r.text_in or Decimal(0)) + audio * r.audio_in)
    if not inputs:
        return None
    worst = max(inputs) + (out * r.out if out and r.out is not None else 0)
    return Decimal(worst).quantize(_USD_QUANTUM, rounding=ROUND_CEILING)


def estimate_call(
    catalog: Catalog, model: str, body: Mapping[str, Any], operation: str = "generateContent"
) -> Estimate:
    prompt, audio = prompt_tokens(body)
    price = _price(catalog, model)
    out = max_output_tokens(body, None if price is None else price.max_output_tokens, operation)
    return Estimate(prompt, audio, out, _worst_cost(price, prompt, audio, out))


def estimate_tokens(
    catalog: Catalog,
    model: str,
    prompt: int,
    audio: int,
    config: Mapping[str, Any],
    operation: str = "generateContent",
) -> Estimate:
    """The worst case of a call whose prompt the caller counted itself (a Live turn: the
    session's context window so far plus its new input); the output is bounded by
    ``config``'s ``generationConfig`` (a Live setup's) as for any call."""
    price = _price(catalog, model)
    out = max_output_tokens(config, None if price is None else price.max_output_tokens, operation)
    return Estimate(prompt, audio, out, _worst_cost(price, prompt, audio, out))


def batch_estimate(
    catalog: Catalog,
    model: str,
    requests: list[Mapping[str, Any]],
    *,
    batch_factor: Decimal,
    operation: str = "generateContent",
) -> Estimate:
    """A batch's worst case: its requests' worst cases added up, the cost at batch rates
    (``batch_factor``: the batch price over the standard one, :func:`batch_factor`);
    ``operation`` of each request (``embedContent``: no output)."""
    prompt = audio = out = 0
    cost: Decimal | None = Decimal(0)
    for body in requests:
        e = estimate_call(catalog, model, body, operation)
        prompt, audio = prompt + e.prompt_tokens, audio + e.audio_tokens
        out += e.max_output_tokens
        cost = None if cost is None or e.cost_usd is None else cost + e.cost_usd
    if cost is not None:
        cost = (cost * batch_factor).quantize(_USD_QUANTUM, rounding=ROUND_CEILING)
    return Estimate(prompt, audio, out, cost)


def batch_factor(catalog: Catalog, model: str) -> Decimal:
    """What a batch call costs relative to the same call at standard rates, as the ledger will
    price both (0.5 where a list has batch columns at half price); 1 when the batch call
    cannot be priced (so the worst case is never under-held)."""
    usage = Usage(prompt_tokens=1_000, output_tokens=1_000)
    standard = price_call(catalog, model, usage, status=200, at=None).cost
    batch = price_call(catalog, model, usage, status=200, at=None, batch=True).cost
    if standard is None or batch is None or standard <= 0:
        return Decimal(1)
    return batch / standard
