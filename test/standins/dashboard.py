#!/usr/bin/env python3
"""Stand-in for ghcr.io/get-convex/convex-dashboard, for convex-ops' tests.

The real dashboard is a Next.js app on port 6791 that the browser loads and then points at
NEXT_PUBLIC_DEPLOYMENT_URL (the backend's public URL); login is by admin key. What the
scripts can get wrong is that URL and the reverse proxy in front, so this serves:
  /        200, an HTML page showing the deployment URL (read once, at start, like a build-time
           NEXT_PUBLIC_ variable is baked into the page);
  /health  200 "ok".
SIGINT/SIGTERM stop it promptly with exit code 0 (compose uses stop_signal: SIGINT).
"""

import datetime
import html
import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = os.environ.get("CONVEX_STANDIN_VERSION", "unknown")
PORT = int(os.environ.get("CONVEX_STANDIN_DASHBOARD_PORT", "6791"))
DEPLOYMENT_URL = os.environ.get("NEXT_PUBLIC_DEPLOYMENT_URL", "")
# As a JavaScript string literal that cannot close the <script> element.
DEPLOYMENT_URL_JS = json.dumps(DEPLOYMENT_URL).replace("</", "<\\/")


def log(level, message):
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    print(f"{stamp} {level} {message}", file=sys.stderr if level == "ERROR" else sys.stdout, flush=True)


PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Convex Dashboard</title></head>
<body>
<h1>Convex Dashboard</h1>
<p>Deployment URL: <code id="deployment-url">{html.escape(DEPLOYMENT_URL or "(NEXT_PUBLIC_DEPLOYMENT_URL is not set)")}</code></p>
<p>Log in with the admin key from <code>./generate_admin_key.sh</code> in the backend container.</p>
<script>window.__NEXT_PUBLIC_DEPLOYMENT_URL__ = {DEPLOYMENT_URL_JS};</script>
<p><small>convex-dashboard stand-in {html.escape(VERSION)}</small></p>
</body>
</html>
"""


class DashboardHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "convex-dashboard-standin"
    sys_version = ""

    def log_message(self, format, *args):  # noqa: A002 - signature fixed by the base class
        pass  # health probes would drown everything else

    def send_body(self, status, body, content_type):
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/":
            self.send_body(200, PAGE, "text/html; charset=utf-8")
        elif path == "/health":
            self.send_body(200, "ok\n", "text/plain; charset=utf-8")
        else:
            self.send_body(404, "This page could not be found.\n", "text/plain; charset=utf-8")

    do_HEAD = do_GET


def main():
    stop = threading.Event()

    def on_signal(signum, _frame):
        log("INFO", f"Received {signal.Signals(signum).name}, shutting down")
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if DEPLOYMENT_URL and not DEPLOYMENT_URL.startswith(("http://", "https://")):
        log("WARN", f"NEXT_PUBLIC_DEPLOYMENT_URL does not look like a URL: {DEPLOYMENT_URL!r}")
    server = ThreadingHTTPServer(("0.0.0.0", PORT), DashboardHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
    log("INFO", f"dashboard (stand-in {VERSION}) listening on 0.0.0.0:{PORT}, deployment URL {DEPLOYMENT_URL or '(unset)'}")
    while not stop.wait(0.5):
        pass
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
