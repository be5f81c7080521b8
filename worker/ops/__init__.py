"""What ops watch: the retention dashboard, Prometheus metrics, `lethe status` and the
daily report."""
