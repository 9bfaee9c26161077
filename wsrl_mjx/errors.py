"""The errors a user can fix: bad config values, dataset files, checkpoints, run directories.

Every such error is a `UserError`, raised with a one-line message that names the field or the
file and says what would work. The launchers (`launch/runtime.py`'s `run`) print it as one line,
`error: <message>`, and exit with status 2, without a Python stack trace; `--verbose` (or
`WSRL_MJX_VERBOSE=1`) shows the trace. Anything else that goes wrong is a bug and keeps its trace.

The kinds live next to what raises them and subclass `UserError`: `ConfigError` here,
`checkpoint.CheckpointError`, `data.validation.DatasetError`. They stay `ValueError`s, so code
that caught ValueError before still does.
"""


class UserError(ValueError):
  """An error the user can fix; the launchers print its message as one line and exit 2."""


class ConfigError(UserError):
  """A config value that cannot work (`--config.<field>=...`); the message names the field."""


class WorkdirError(UserError):
  """A run directory that cannot be used: not writable, or held by another run."""
