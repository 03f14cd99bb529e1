"""tiktoken without a network: it downloads its BPE files at first use, so tests that run a
client tokenising with tiktoken (LangChain's ``OpenAIEmbeddings``) serve it the copies the
proxy itself decodes with (tiktoken still checks each against its pinned hash)."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.openai.tokens import encoding_file


def offline_tiktoken(monkeypatch: pytest.MonkeyPatch, cache_dir: Path) -> None:
    import tiktoken.load

    def read_file(blobpath: str) -> bytes:
        return encoding_file(blobpath.rsplit("/", 1)[-1].removesuffix(".tiktoken"))

    monkeypatch.setattr(tiktoken.load, "read_file", read_file)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache_dir))  # nothing from an earlier run
