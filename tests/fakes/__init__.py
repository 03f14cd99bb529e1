"""Test doubles: a scriptable fake Gemini upstream (gemini.py) and a uvicorn runner (server.py)."""
