"""Tests of the issuer service."""
