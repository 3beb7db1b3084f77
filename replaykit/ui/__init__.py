"""``replaykit ui DB``: a store's runs in a browser, and the same as a JSON HTTP API (the ``ui`` extra).

``app.create_app(db)`` is the ASGI application (FastAPI); ``pages`` draws its HTML.
"""
