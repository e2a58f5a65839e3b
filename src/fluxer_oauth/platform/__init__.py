"""What the scopes expose: accounts, applications and bots, guilds, connections."""
