"""Load drivers: wrk (``post.lua``) and the asyncio + httptools client."""
