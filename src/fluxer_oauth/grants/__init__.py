"""The grant aggregate: what a user granted an application, and every way it ends.

Below both oauth/ (issuance, revocation) and platform/ (accounts, applications, admin),
which call it; it depends only on the store."""
