"""moto's server, answering one request at a time.

moto's DynamoDB checks a ConditionExpression and then writes, with no lock between the two, so two
concurrent conditional PutItems of the same key can both succeed on a threaded server; DynamoDB
never lets that happen, and Cairn's store relies on it. Serializing the requests makes the stand-in
keep that guarantee (the tests' traffic is small, so the cost is negligible).

    python moto-serial.py HOST PORT
"""
import os
import sys
import threading

from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app

app = DomainDispatcherApplication(create_backend_app)
lock = threading.Lock()


def serialized(environ, start_response):
    with lock:
        # Drained inside the lock: the whole response is computed before the next request starts.
        return list(app(environ, start_response))


if __name__ == "__main__":
    os.environ.setdefault("MOTO_PORT", sys.argv[2])  # as moto_server does: moto builds some URLs with it
    run_simple(sys.argv[1], int(sys.argv[2]), serialized, threaded=True, request_handler=MotoRequestHandler)
