# The Flask + pymongo reference app, re-created as users deployed it: one module-level
# MongoClient, a URI pasted together from the MONGO_* variables without escaping, no
# validation and no limits. It is the baseline `just bench` measures against; do not
# improve it.
import os
from datetime import datetime

from flask import Flask, jsonify, request
from pymongo import MongoClient

app = Flask(__name__)

MONGO_USER = os.environ.get("MONGO_USER")
MONGO_PASSWORD = os.environ.get("MONGO_PASSWORD")
MONGO_HOST = os.environ.get("MONGO_HOST", "mongo")
MONGO_PORT = os.environ.get("MONGO_PORT", "27017")
MONGO_DB = os.environ.get("MONGO_DB", "flask_db")
MONGO_AUTH_DB = os.environ.get("MONGO_AUTH_DB", "admin")

client = MongoClient(
    f"mongodb://{MONGO_USER}:{MONGO_PASSWORD}@{MONGO_HOST}:{MONGO_PORT}/{MONGO_DB}?authSource={MONGO_AUTH_DB}"
)
db = client[MONGO_DB]
collection = db["data"]


@app.route("/")
def index():
    return f"Welcome to the Flask app! The current time is: {datetime.now()}"


@app.route("/data", methods=["GET", "POST"])
def data():
    if request.method == "POST":
        collection.insert_one(request.get_json())
        return jsonify({"status": "Data inserted"}), 201
    return jsonify(list(collection.find({}, {"_id": 0}))), 200
