"""Stores: the quota ledger, records and outbox, one implementation per engine."""
