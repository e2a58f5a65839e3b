"""JSON API route modules; importing them registers their routes on ``web.api.router``."""

from fluxer_oauth.web.routes import accounts, applications, oauth, resources  # noqa: F401
