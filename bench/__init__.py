"""``make bench``: triggergate's deny and accept paths against a bare route and a slowapi peer."""
