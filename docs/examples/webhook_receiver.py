"""A webhook receiver for trying Boreas out: checks each Standard Webhooks signature with the
standard library alone and prints what it received.

    python3 docs/examples/webhook_receiver.py whsec_... [port]

Not for production: it keeps no record of webhook-ids (dedupe) and checks no timestamp age.
"""

import base64
import hashlib
import hmac
import http.server
import json
import sys

KEY = base64.b64decode(sys.argv[1].removeprefix("whsec_"))
PORT = int(sys.argv[2]) if len(sys.argv) > 2 else 9000


class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        stamp = self.headers["webhook-timestamp"]
        signed = f"{self.headers['webhook-id']}.{stamp}.".encode() + body
        mac = base64.b64encode(hmac.new(KEY, signed, hashlib.sha256).digest()).decode()
        offered = [s[3:] for s in self.headers["webhook-signature"].split() if s.startswith("v1,")]
        ok = any(hmac.compare_digest(mac, s) for s in offered)
        event = json.loads(body)
        verdict, state = "verified" if ok else "FORGED", event["data"].get("new_state", "")
        print(verdict, event["type"], event.get("subject"), state, flush=True)
        self.send_response(204 if ok else 401)
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


http.server.HTTPServer(("127.0.0.1", PORT), Hook).serve_forever()
