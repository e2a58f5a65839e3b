"""JSON API route modules; importing them registers their routes on ``web.api.router``."""

from fluxer_oauth.web.routes import (  # noqa: F401
    account_security, accounts, admin, applications, guilds, oauth, openid, resources,
)
