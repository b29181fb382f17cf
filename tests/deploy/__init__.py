"""The shipped deployments (container image, compose file, systemd unit), tested as documented."""
