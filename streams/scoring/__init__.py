"""The scoring loop: stages, pipeline, routing, the commit protocol, the processor, its
side paths (shadow challenger, prediction store, drift) and the composition root that wires
them from the settings."""
