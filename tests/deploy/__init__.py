"""The container files (deploy/Dockerfile, deploy/compose.yaml), checked without Docker."""
