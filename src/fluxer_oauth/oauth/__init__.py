"""The OAuth2 protocol: authorization requests and consent, the token endpoint and its
grants, client authentication, and bearer-token validation."""
