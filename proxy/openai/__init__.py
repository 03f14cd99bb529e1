"""The OpenAI-compatible API's pure translation layer (no HTTP, no DB).

- :mod:`.chat` — chat request → Gemini body (:class:`ChatCall`); reply → ``chat.completion``.
- :mod:`.stream` — :class:`ChatStreamTranslator`: stream events → ``chat.completion.chunk``.
- :mod:`.embeddings` — embeddings request → ``batchEmbedContents``; reply → OpenAI list.
- :mod:`.models` — models list / object.
- :mod:`.errors` — upstream Gemini errors → OpenAI's envelope and statuses.
- :mod:`.responses` / :mod:`.responses_stream` — Responses API request → Gemini body; reply →
  ``response`` object; stream events → the typed ``response.*`` events.
- :mod:`.completions` — legacy completions: prompts → one Gemini body each; replies →
  ``text_completion`` and its stream chunks.
- :mod:`.images` — image generation → Imagen ``:predict``; predictions → ``ImagesResponse``.
- :mod:`.tokens` — OpenAI token ids → text (tiktoken's encodings, shipped offline).

Helpers: :mod:`.messages`, :mod:`.media`, :mod:`.tools`, :mod:`.schema`, :mod:`.thinking`,
:mod:`.tool_ids` (thought signatures in tool call ids), :mod:`.validate`.
docs/openai-compat.md has the full mapping table.
"""

from __future__ import annotations

from proxy.openai.chat import (
    ChatCall,
    chat_request_to_gemini,
    chat_usage,
    gemini_reply_to_chat,
    new_completion_id,
)
from proxy.openai.embeddings import (
    EmbeddingsCall,
    embeddings_request_to_gemini,
    gemini_embeddings_to_openai,
)
from proxy.openai.errors import (
    UpstreamStreamError,
    openai_error_from_upstream,
    upstream_retry_after,
)
from proxy.openai.models import gemini_model_to_openai, gemini_models_to_openai
from proxy.openai.stream import ChatStreamTranslator

__all__ = [
    "ChatCall",
    "ChatStreamTranslator",
    "EmbeddingsCall",
    "UpstreamStreamError",
    "chat_request_to_gemini",
    "chat_usage",
    "embeddings_request_to_gemini",
    "gemini_embeddings_to_openai",
    "gemini_model_to_openai",
    "gemini_models_to_openai",
    "gemini_reply_to_chat",
    "new_completion_id",
    "openai_error_from_upstream",
    "upstream_retry_after",
]
