"""The baseline of `bench_webhook.py --against-bare`: a bare Flask app that reads and parses the body, nothing else."""

from __future__ import annotations

import json

from flask import Flask, Response, jsonify, request


def create_app() -> Flask:
    app = Flask("bare")

    @app.post("/webhook")
    def webhook() -> tuple[Response, int]:
        json.loads(request.get_data())
        return jsonify(status="queued"), 202

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        return jsonify(status="ok"), 200

    return app
