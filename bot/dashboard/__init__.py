"""The owner's dashboard: live status, model versions and community insights, served by the bot or as a report.

It lives under `bot/` rather than `cogs/` because it is an edge of the process, like the console and the platform
clients: it reads every feature's tables and the runtime's live parts, and no platform adapts it.

- `server.py`: the aiohttp app (sign-in, pages, `/api/status`) and `serve_dashboard`, started by `bot/app.py`.
- `pages.py`: gather + render each page (shared by the server, `familiar report` and the benchmark).
- `data.py`: the database reads (rollups and indexes from migration 0006); `insights.py`: topics and sentiment.
- `status.py`: the live numbers (`bot/metrics.py`, the backend, the model service); `charts.py`: inline SVG;
  `render.py` + `templates/`: the HTML, autoescaped; `auth.py`: the secret, bearer tokens and session cookies;
  `report.py`: the static page.
"""

from bot.dashboard.auth import dashboard_secret
from bot.dashboard.pages import Pages, Sources
from bot.dashboard.server import serve_dashboard

__all__ = ["Pages", "Sources", "dashboard_secret", "serve_dashboard"]
