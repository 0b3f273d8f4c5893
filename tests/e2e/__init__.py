"""End-to-end tests against a real control plane (kubenpu dev-cluster); marked e2e."""
