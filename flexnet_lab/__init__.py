"""FlexNet Lab: a Mininet network of runtime-programmable switches (eBPF, bmv2) and eBPF
hosts, reprogrammed as a whole while it carries traffic, with the loss measured.

The flow through the package: topology (pure data) -> lab (the running network) ->
program (the model and its deltas) -> compiler (eBPF C, P4) -> plan (what a change costs,
and carrying it out) -> targets (devices) -> verify (traffic, verdict, scenarios).
"""
__version__ = "0.1.0"
