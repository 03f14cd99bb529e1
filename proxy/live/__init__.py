"""The Live API (``BidiGenerateContent`` over WebSocket): reading its messages for the relay."""
