"""The algorithms OpenID Connect id_tokens are signed with (oauth/keys.py makes the keys)."""

# RS256 first: the default, and what every relying party supports (OpenID Connect Core §15.1);
# ES256 for those that ask. Nothing else is ever produced: no "none", no HMAC (a relying party
# must never be led to verify with a public key as an HMAC secret, or to accept an unsigned
# token because its header said so).
SIGNING_ALGORITHMS = ("RS256", "ES256")
DEFAULT_ALGORITHM = "RS256"
