"""``kubenpu scheduler``: a kube-scheduler extender driven by the placement engine.

Layers: ``wire`` (the extender API's JSON types), ``cache`` (Nodes and Pods as engine
state), ``core`` (filter, prioritize, bind; pure apart from the :class:`core.KubeApi` it is
given), ``informer`` (list and watch), ``kubeapi`` (the Kubernetes client), ``server``
(HTTP), ``metrics``. See docs/extender.md.
"""
