"""Running splitserve on one machine: `splitserve run` and `splitserve demo`."""
