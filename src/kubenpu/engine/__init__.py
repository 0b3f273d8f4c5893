"""The placement engine: pure logic over numpy arrays, no I/O.

``state`` holds the cluster, ``fit`` filters, ``framework`` runs one decision, ``baselines``
and ``policies`` name the scoring policies, ``fragmentation`` measures stranded capacity.
"""
