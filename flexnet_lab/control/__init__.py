"""The controller: owns the network's intent (every device's program, entries and host
functions, and the apps deployed), keeps it in a store that survives crashes, applies
changes to the devices, and repairs what drifts. See controller.py."""
