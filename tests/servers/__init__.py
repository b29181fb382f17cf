"""Real servers for the test suite, started on free 127.0.0.1 ports and stopped by PID."""
