"""The local backend's machinery: LXD host setup, the node image, node lifecycle, SSH, labs.

Everything here works on a plain LXD daemon without the Pulumi engine; the Pulumi dynamic
provider in kubesmith.program.backends.lxd and the `kubesmith lab` harness both build on it.
"""
