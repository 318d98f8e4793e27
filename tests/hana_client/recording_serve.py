"""`hana serve` that also writes each `/api/create` body it receives to $HANA_RECORD (JSON lines).

Run as a script by tests that compare what different clients send; everything else is the real
server.
"""

from __future__ import annotations

import json
import os
from typing import Any

import hana_server.serve as serve_module
from hana_server.cli import main

_make_app = serve_module.make_shared_port_app


def _record(handler: Any) -> None:
    request = handler.request
    if request.method == "POST" and request.path == "/api/create":
        with open(os.environ["HANA_RECORD"], "a", encoding="utf-8") as record:
            record.write(json.dumps(json.loads(handler.body_bytes)) + "\n")


def _recording_app(*args: Any, **kwargs: Any) -> Any:
    app = _make_app(*args, **kwargs)
    # tornado calls `log_function(handler)` once per finished request, body still at hand.
    app.settings["log_function"] = _record
    return app


if __name__ == "__main__":
    serve_module.make_shared_port_app = _recording_app
    main(["serve"])
