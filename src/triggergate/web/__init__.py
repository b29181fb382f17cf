"""The HTTP surface: one ASGI app for uvicorn and for Lambda (through Mangum)."""
