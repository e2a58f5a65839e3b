"""Fluxer OAuth2: the authorization server of the Fluxer chat platform."""

__version__ = "0.1.0"
