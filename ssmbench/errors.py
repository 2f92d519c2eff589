"""User-facing errors. The CLI prints their message (no traceback) and exits with status 2."""


class SSMBenchError(Exception):
    """An error caused by the user's input (recipe, data, checkpoint), with a message that says how to fix it."""

    exit_code = 2


class RecipeError(SSMBenchError):
    """A recipe that does not validate. `problems` are `field.path: message` lines."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


class DataError(SSMBenchError):
    """A dataset that is missing or malformed; the message names the file and how to get it."""


class RecordError(SSMBenchError):
    """A run-record file (recipe.yaml, env.json, results.json, metrics.jsonl) that is not what ssmbench writes:
    not a regular file, too large, not UTF-8 JSON/YAML, or of the wrong shape. The message names the file."""


class CheckpointError(SSMBenchError):
    """A checkpoint that is missing, truncated or fails its checksum."""


class Stopped(SSMBenchError):
    """SIGTERM before any work that a resume could continue (e.g. while the command's modules are imported)."""

    exit_code = 75  # EX_TEMPFAIL, as for a preempted run: run the command again


def stop_on_sigterm(signum, frame) -> None:
    """Signal handler for the start of a command (imports, argument and recipe checks): raise `Stopped`."""
    import signal

    raise Stopped(f"{signal.Signals(signum).name} received before any work started; run the command again")


class NonFiniteError(SSMBenchError):
    """Training produced a non-finite loss or gradient."""

    exit_code = 3
