"""The `meshtrust` command line."""
