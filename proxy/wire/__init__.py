"""Wire shapes: TypedDicts of the JSON bodies the proxy reads and writes, and no logic.

``gemini`` holds Google's generativelanguage v1beta shapes (camelCase, as replied), ``openai``
holds OpenAI's chat, embeddings, models and error shapes. At runtime they are plain dicts; the
types let mypy check key names where translators build bodies.
"""
