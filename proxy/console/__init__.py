"""The web console at `/ui`: static files (a login page and a small app) plus `GET /admin/health`.

Nothing here is imported until `/ui` or `/admin/health` is first requested (proxy/app.py routes them
through `lazy_route`). The pages hold no data: everything comes from the JSON APIs with the master key
the browser keeps in its session storage and sends as `Authorization: Bearer` (no cookies, so no CSRF).
"""
