"""A gateway stand-in for the playbook's last step: `python -m tests.deploy_live.gateway_standin PORT
SECRET OUT` listens on 127.0.0.1:PORT (of the network namespace it is started in), checks each
`POST /webhooks/semaphore` with the gateway's own verifier and appends what it found to OUT as one JSON
line. It answers 202 for a verified hint and 401 otherwise, as the gateway does."""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

from services.semaphore.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookError, verify_hint


def main(port: int, secret: str, out: Path) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            record: dict[str, object] = {"path": self.path, "body": body.decode(errors="replace")}
            try:
                hint = verify_hint(
                    secret, body, self.headers.get(TIMESTAMP_HEADER), self.headers.get(SIGNATURE_HEADER)
                )
                record["task_id"] = hint.task_id
                status = 202
            except WebhookError as error:
                record["error"] = str(error)
                status = 401
            with out.open("a") as sink:
                sink.write(json.dumps(record) + "\n")
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return

    server = HTTPServer(("127.0.0.1", port), Handler)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))
