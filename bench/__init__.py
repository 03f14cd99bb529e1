"""gemini-meter's benchmark harness (docs/benchmarks.md): ``python -m bench.run``.

- ``fake_upstream``: a fast fake of Gemini's REST API (asyncio + httptools on uvloop);
- ``driver/``: wrk with ``post.lua`` for non-stream load, ``client.py`` for streams and counts;
- ``stack``: the servers of a run (fake, gemini-meter set up with its CLI, LiteLLM);
- ``scenarios``: what is measured; ``run``: one command for all; ``report``: the markdown;
- ``profile`` (py-spy) and ``compare`` (A/B of proxy trees): where the CPU goes, what a change buys.

Not part of the test suite: timing targets live here, never in tests/. ``ledger_report.py`` is the
ledger-report benchmark at ten million rows (its own docstring says how to run it).
"""
