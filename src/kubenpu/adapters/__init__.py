"""Translation between outside formats (Kubernetes objects, traces) and the model."""
