"""triggergate: a public, unauthenticated, abuse-proof trigger for a CI/CD pipeline."""

__version__ = "0.1.0"
