"""Notifiers: where alerts go (log, SNS, e-mail, webhook)."""
