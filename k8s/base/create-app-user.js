// Runs once, when MongoDB starts on an empty volume: the mongo image's entrypoint creates
// the root user, then runs the files in /docker-entrypoint-initdb.d against a temporary
// mongod it started on 127.0.0.1 without authentication, before starting the real one
// with it. The service logs in as this user, which may only read and write its own
// database.
const admin = db.getSiblingDB("admin");
admin.createUser({
  user: process.env.MONGO_APP_USER,
  pwd: process.env.MONGO_APP_PASSWORD,
  roles: [{ role: "readWrite", db: process.env.MONGO_APP_DB }],
});
