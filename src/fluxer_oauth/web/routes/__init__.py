"""JSON API route modules; importing them registers their routes on ``web.api.router``."""

from fluxer_oauth.web.routes import accounts, admin, applications, guilds, oauth, openid, resources  # noqa: F401
