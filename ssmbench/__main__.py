"""`python -m ssmbench` and the `ssmbench` console script. SIGTERM exits 75 from the first instant, also while the
command-line modules are still being imported (then `ssmbench.cli.main` takes over)."""

import signal
import sys

from ssmbench.errors import Stopped, stop_on_sigterm


def run() -> None:
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        from ssmbench.cli import main
    except Stopped as e:
        print(f"stopped: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    main()


if __name__ == "__main__":
    run()
