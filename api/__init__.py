"""Entry points: configuration, the Starlette JSON API and the command line."""
