"""Profile docrelay's hot path (the B1 setup) with pyinstrument.

.venv/bin/pip install pyinstrument
.venv/bin/python -m benchmarks.profile_hot_path [DOCS] > profile.txt
"""

from __future__ import annotations

import sys

from ._common import Workdir, documents, make_relay
from ._server import ReferenceServer


def main(n: int = 2000) -> None:
    from pyinstrument import Profiler

    work = Workdir()
    server = ReferenceServer()
    try:
        relay = make_relay(work.db_url("warm"), server.url)
        relay.submit_many(documents("warm", 50))
        relay.run_until_idle()
        relay.close()
        relay = make_relay(work.db_url("prof"), server.url)
        relay.submit_many(documents("prof", n))
        profiler = Profiler(interval=0.0002)
        profiler.start()
        relay.run_until_idle()
        profiler.stop()
        relay.close()
        print(profiler.output_text(unicode=False, color=False, show_all=False, short_mode=False))
    finally:
        server.close()
        work.cleanup()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
