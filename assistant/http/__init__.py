"""The HTTP front end: Ollama's API (/api) and OpenAI's (/v1) translated onto the core.

A body is read with a size limit and a deadline, validated into a typed `Request`
(`ollama_schema`, `openai_schema`), submitted to the core, and its events written back in
the API's own shapes (`ollama_api`, `openai_api`); `relay` owns the part both share:
refusals as HTTP statuses, tool calls read from the text, a client that goes away
cancelling its request. `server` wires the routes, limits and the bearer token.
"""
