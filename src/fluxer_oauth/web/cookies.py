"""The names of the pages' cookies: the session (HttpOnly, SameSite=Lax; web/pages.py) and
the CSRF seed its forms' tokens are bound to."""

SESSION_COOKIE = "fluxer_session"
CSRF_COOKIE = "fluxer_csrf"
