"""Local development stack: embedded nats-server and the Kubernetes API emulator.

Never imported by shared/ or services/ (an import-linter contract enforces it).
"""
