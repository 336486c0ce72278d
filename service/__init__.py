"""The HTTP service around the pipeline: API (``service.api``), job queue and workers (``service.jobs``),
SSRF-safe fetching and API keys (``service.security``), signed callbacks (``service.callbacks``) and the
request/response models (``service.schemas``). The same app runs on Modal (app.py) and locally
(``make serve``: ``uvicorn web.server:create_app --factory``)."""
