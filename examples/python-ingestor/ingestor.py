#!/usr/bin/env python3
"""A Keyward ingestor in Python, from docs/api.md and docs/events.md alone.

POST /ingest/{stream} behind `Authorization: Bearer <api key>`: 202 when the
key is valid and may write the stream, 401, 403, or 503 when the API cannot
be asked. Keys are verified with POST /api/v1/verify (this node's `verifier`
key) and cached for the `cacheTtlSeconds` the API returns; the node's own
durable queue brings the events: `key.revoked` leaves a tombstone (refused
from memory), `key.updated` and `rbac.changed` drop cached answers. Each
event is applied, then reported `applied` (confirmed by the broker), then
acked. A heartbeat goes out every 5 s. CI runs it against the real system
(scripts/python-ingestor.sh).

    pip install pika requests
    KEYWARD_VERIFIER_KEY=kw_... python3 ingestor.py

Settings (environment): KEYWARD_API_URL (http://127.0.0.1:8080),
KEYWARD_VERIFIER_KEY, KEYWARD_AMQP_URL (amqp://guest:guest@127.0.0.1:5672/%2f),
KEYWARD_EXCHANGE (keyward.events), KEYWARD_ACKS_QUEUE (keyward.acks),
KEYWARD_INGESTOR_ID (python-ingestor), KEYWARD_LISTEN_PORT (8082).
"""

import datetime
import fnmatch
import hashlib
import hmac
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pika
import requests

API = os.environ.get("KEYWARD_API_URL", "http://127.0.0.1:8080").rstrip("/")
VERIFIER = os.environ["KEYWARD_VERIFIER_KEY"]
AMQP = os.environ.get("KEYWARD_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
EXCHANGE = os.environ.get("KEYWARD_EXCHANGE", "keyward.events")
ACKS = os.environ.get("KEYWARD_ACKS_QUEUE", "keyward.acks")
NODE = os.environ.get("KEYWARD_INGESTOR_ID", "python-ingestor")
QUEUE = f"keyward.ingestor.{NODE}"
TOMBSTONE_SECONDS = 600  # longer than any positive answer can be cached

lock = threading.Lock()
cache = {}        # key id -> (secret digest, answer, cached until)
tombstones = {}   # key id -> until
changes = [0]     # bumped by every event: an answer fetched across one is not cached
connected = [False]


def now():
    return datetime.datetime.now(datetime.timezone.utc)


def key_id_of(token):
    parts = token.split("_")  # {prefix}_{keyId}_{random}{checksum}
    return parts[1] if len(parts) == 3 else None


def may_ingest(privileges, stream):
    for p in privileges:
        if p["privilege"] in ("editor", "admin"):
            return True
        pattern = (p.get("resource") or {}).get("stream", "*")
        if p["privilege"] in ("ingestor", "writer") and fnmatch.fnmatchcase(stream, pattern):
            return True
    return False


def verify(token):
    """(status, answer): 200 and the verify answer, 401, or 503."""
    key_id = key_id_of(token)
    if key_id is None:
        return 401, None
    digest = hashlib.sha256(token.encode()).digest()
    with lock:
        if tombstones.get(key_id, 0) > time.time():
            return 401, None
        hit = cache.get(key_id) if connected[0] else None
        seen = changes[0]
    if hit and hit[2] > time.time():
        if not hmac.compare_digest(hit[0], digest):
            return 401, None
        expires = hit[1].get("expiresAt")
        if expires and datetime.datetime.fromisoformat(expires.replace("Z", "+00:00")) <= now():
            return 401, None
        return 200, hit[1]
    try:
        res = requests.post(f"{API}/api/v1/verify", json={"apiKey": token},
                            headers={"Authorization": f"Bearer {VERIFIER}"}, timeout=5)
        answer = res.json() if res.status_code == 200 else None
    except requests.RequestException:
        answer = None
    if answer is None:
        return 503, None
    if not answer["valid"]:
        if answer.get("reason") == "revoked":
            with lock:
                tombstones[key_id] = time.time() + TOMBSTONE_SECONDS
        return 401, None
    with lock:
        if changes[0] == seen and connected[0]:
            cache[key_id] = (digest, answer, time.time() + answer["cacheTtlSeconds"])
    return 200, answer


class Ingest(BaseHTTPRequestHandler):
    def do_POST(self):
        if not self.path.startswith("/ingest/"):
            return self.answer(404, "not_found", "No such endpoint.")
        stream = self.path[len("/ingest/"):]
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return self.answer(401, "unauthenticated", "Missing API key.")
        status, answer = verify(auth[len("Bearer "):].strip())
        if status == 401:
            return self.answer(401, "unauthenticated", "Invalid, revoked or expired API key.")
        if status == 503:
            return self.answer(503, "unavailable", "The key service is unavailable; try again.")
        if not may_ingest(answer["privileges"], stream):
            return self.answer(403, "forbidden", "The API key may not ingest into this stream.")
        size = int(self.headers.get("Content-Length", "0"))
        if size > 1024 * 1024:
            return self.answer(413, "payload_too_large", "Bodies are limited to 1 MiB.")
        self.rfile.read(size)
        self.reply(202, {"accepted": True, "bytes": size})

    def answer(self, status, code, message):
        self.reply(status, {"error": {"code": code, "message": message, "requestId": NODE}})

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 503:
            self.send_header("Retry-After", "1")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def apply(event):
    with lock:
        changes[0] += 1
        if event["type"] == "key.revoked":
            tombstones[event["keyId"]] = time.time() + TOMBSTONE_SECONDS
            cache.pop(event["keyId"], None)
        elif event["type"] == "key.updated":
            cache.pop(event["keyId"], None)
        elif event["type"] == "rbac.changed":
            for key_id in [k for k, v in cache.items() if v[1]["tenantId"] == event["tenantId"]]:
                del cache[key_id]
        else:
            return False
    return True


def report(channel, body):
    # Persistent, on the default exchange; with confirms on, basic_publish
    # returns once the broker confirmed it (and raises if it refused).
    channel.basic_publish("", ACKS, json.dumps(body).encode(),
                          pika.BasicProperties(delivery_mode=2, content_type="application/json"))


def consume():
    while True:
        try:
            connection = pika.BlockingConnection(pika.URLParameters(AMQP))
            channel = connection.channel()
            channel.confirm_delivery()
            channel.exchange_declare(EXCHANGE, exchange_type="topic", durable=True)
            channel.queue_declare(QUEUE, durable=True)
            channel.queue_bind(QUEUE, EXCHANGE, routing_key="#")
            channel.basic_qos(prefetch_count=16)
            with lock:
                cache.clear()  # events published while away wait in the queue
                connected[0] = True
            next_beat = 0.0
            for method, _, body in channel.consume(QUEUE, inactivity_timeout=1):
                if time.time() >= next_beat:
                    report(channel, {"type": "heartbeat", "ingestorId": NODE, "queue": QUEUE,
                                     "at": now().isoformat()})
                    next_beat = time.time() + 5
                if method is None:
                    continue
                try:
                    event = json.loads(body)
                    known = apply(event)
                except (ValueError, KeyError, TypeError):
                    known = False
                if not known:
                    channel.basic_reject(method.delivery_tag, requeue=False)
                    continue
                report(channel, {"type": "applied", "eventId": event["eventId"], "ingestorId": NODE,
                                 "appliedAt": now().isoformat()})
                channel.basic_ack(method.delivery_tag)
        except pika.exceptions.AMQPError:
            with lock:
                connected[0] = False  # no cached answer counts until back
            time.sleep(1)


if __name__ == "__main__":
    threading.Thread(target=consume, daemon=True).start()
    port = int(os.environ.get("KEYWARD_LISTEN_PORT", "8082"))
    ThreadingHTTPServer(("127.0.0.1", port), Ingest).serve_forever()
