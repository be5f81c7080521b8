"""`lethe demo`: a demo shop and its people, and the whole lifecycle run on them on the
embedded default."""
