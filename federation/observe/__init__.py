"""What the federation and its site agents tell monitoring: Prometheus metrics, served over HTTPS."""
