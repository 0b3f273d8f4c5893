"""The kubenpu admission webhook: validates and mutates pods that ask for NPUs.

``review`` types and checks the AdmissionReview v1 wire format, ``admission`` holds the
rules (pure: no I/O, no Kubernetes client), ``lookups`` reads Nodes and Namespaces from the
API for them, and ``server`` is the HTTPS server that only translates between the two.
"""
