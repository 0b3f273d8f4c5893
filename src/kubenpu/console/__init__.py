"""``kubenpu console``: a read-only web view of the NPU cluster (docs/console.md).

- ``views``: the pages' view models, pure functions of the cache's ``ClusterState``, the
  Pods, Nodes and Events as the API returns them (no I/O);
- ``reasons``: why a pod waits, in plain words, from its events and conditions;
- ``simreport``: the simulator's report (a JSON file, or the built-in default computed on
  demand within a time budget);
- ``store``: the watch-fed state (the extender's ``ClusterCache`` plus raw objects and
  events) and its change counter;
- ``metrics``: Prometheus gauges computed from the store at scrape time;
- ``kubeapi``: the Kubernetes client calls (the only module here that imports it);
- ``app``: the Starlette application (pages, SSE, health), served by uvicorn.
"""
