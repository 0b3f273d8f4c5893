"""``kubectl npu``: the kubectl plugin (console script ``kubectl-npu``); see docs/kubectl-npu.md.

``views`` turns Nodes and Pods (the API's JSON) into the rows shown, with no I/O;
``cli`` reads the cluster and prints them.
"""
