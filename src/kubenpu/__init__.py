"""kubenpu: NPU scheduling for Kubernetes.

One placement engine (``kubenpu.engine``) over a plain-data model (``kubenpu.model``),
driven by the simulator, the scheduler extender and the operator tools alike.
"""

__version__ = "0.1.0"
