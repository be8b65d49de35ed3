"""kubesmith: declarative Kubernetes clusters from a Pulumi stack configuration."""

__version__ = "0.1.0"
