"""Provisioning: turn the inventory's nodes into a container runtime and a TLS etcd cluster.

``provisioner.provision`` is the one entry point (the CLI and the Pulumi resource call it):
it issues the cluster PKI on the controller (``pki``), fetches and verifies release
downloads (``kubesmith.downloads``), computes the per-host variables (``hostvars``) and runs
playbooks/site.yml through ansible-runner (``runner``), reporting progress (``recap``).
"""
