"""Entry points and wiring: the JSON API (http/), the command line (cli/), configuration
(config/), the console's files (static/), and the runtime that builds and closes it all."""
