"""The I/O seam: the Transport protocol, the memory transport and JetStream."""
