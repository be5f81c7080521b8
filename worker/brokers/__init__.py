"""The brokers Lethe brings of its own: the embedded (file) broker and the client's spool,
Lethe's Redis transport, and the ending of processes orphaned by their parent."""
