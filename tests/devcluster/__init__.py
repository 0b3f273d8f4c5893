"""Unit tests of kubenpu.devcluster: no control plane needed."""
