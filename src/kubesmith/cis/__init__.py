"""The CIS Kubernetes Benchmark, judged from the files and units kubesmith writes on a node.

``benchmark.yaml`` holds the items as data (where each lives on a kubesmith node and how it is
judged, or why it is not); :mod:`kubesmith.cis.benchmark` loads and validates it,
:mod:`kubesmith.cis.probe` gathers what one node has in one SSH round trip and
:mod:`kubesmith.cis.evaluate` judges every item for that node, with the evidence.
"""
