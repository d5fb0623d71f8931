"""meshtrust services: issuer, agent, bouncer. Each imports shared, never another service."""
