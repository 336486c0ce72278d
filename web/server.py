"""The deployed HTTP app: the detection API (``service.api``) with the WhatsApp Cloud API webhook and the result
pages mounted on it. ``make serve`` runs it (uvicorn factory ``web.server:create_app``) and so does the Modal
class in ``app.py``. It sits above ``service`` and ``whatsapp``: nothing below imports it.
"""

from __future__ import annotations

from fastapi import FastAPI

from service.api import create_app as create_api
from web import routes
from whatsapp import webhook


def create_app(settings=None, **kwargs) -> FastAPI:
    """``service.api.create_app`` (same arguments) + ``/whatsapp/*`` + the pages at ``/`` (unless WEB_UI=0)."""
    app = create_api(settings, **kwargs)
    settings = app.state.settings
    app.state.body_limits.update({webhook.WEBHOOK_PATH: webhook.WEBHOOK_BODY_LIMIT,
                                  webhook.CALLBACK_PATH: webhook.CALLBACK_BODY_LIMIT})
    router = webhook.create_router(settings, app.state.service)
    app.state.whatsapp = router.bot
    app.include_router(router)
    if settings.web_ui:
        routes.mount(app, settings, app.state.repo)
    return app
