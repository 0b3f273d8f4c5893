"""``kubenpu scheduler``: a kube-scheduler extender driven by the placement engine.

Layers: ``wire`` (the extender API's JSON), ``cache`` (Nodes and Pods as engine state),
``core`` (filter, prioritize: the engine's steps), ``binder`` (bind and its races),
``api`` (the API calls, as protocols), ``informer`` (list and watch), ``kubeapi`` (the
Kubernetes client), ``server`` (HTTP), ``metrics``. See docs/extender.md.
"""
