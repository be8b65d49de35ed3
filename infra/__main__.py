"""The Pulumi program: `pulumi up` runs this. All logic lives in kubesmith.program."""

from kubesmith.program import main

main()
