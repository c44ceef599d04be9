"""Release automation called by the GitHub workflows: version discovery, the bump, the
release analysis and the image boot test. Kept out of the onerun package (never shipped)."""
