"""The ``canary`` command line."""
