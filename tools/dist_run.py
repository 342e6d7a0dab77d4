"""torchrun for tools/dist_train.sh and tools/dist_test.sh, without torchrun's own
traceback when a worker fails.

Each worker has already printed its error (one line for bad input); torchrun then adds
its failure summary and re-raises, which ends in a traceback of the launcher itself.
Here a one-line summary replaces both; the exit status is the first failed worker's.

    python tools/dist_run.py [torchrun arguments] SCRIPT [script arguments]
"""
import sys

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import main

if __name__ == '__main__':
    try:
        main()
    except ChildFailedError as err:
        failures = sorted(err.failures.items())
        print(f'{err.name} failed in {len(failures)} of the processes: ' + ', '.join(
            f'rank {rank} (exit code {failure.exitcode})' for rank, failure in failures),
              file=sys.stderr)
        codes = [failure.exitcode for _, failure in failures]
        sys.exit(next((code for code in codes if code > 0), 1))
