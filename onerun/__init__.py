"""onerun: the entrypoint that runs an OpenNebula 7 front-end in a container."""

__version__ = "0.1.0"
