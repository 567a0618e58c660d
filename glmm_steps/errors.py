"""The one exception type for problems a user can fix (config, data, formula)."""


class GlmmError(Exception):
    """A user-facing error: its message is one line that names the offending key,
    column or term and what was expected. Caught at the edge (Snakefile, CLI) and
    printed without a traceback."""


class ConfigError(GlmmError):
    """The config file is invalid; the message starts with the key path."""

    def __init__(self, path: str, problem: str):
        self.path = path
        self.problem = problem
        super().__init__(f"config error: {path}: {problem}" if path else f"config error: {problem}")


class DataError(GlmmError):
    """A data file cannot be fitted as declared (missing column, wrong type, ...)."""
