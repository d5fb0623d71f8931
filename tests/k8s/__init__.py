"""Tests of shared.k8s: pure logic, and integration across the Kubernetes API emulator."""
