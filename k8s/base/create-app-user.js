// Runs once, when MongoDB starts on an empty volume (the mongo image runs the files in
// /docker-entrypoint-initdb.d as the root user). The service logs in as this user, which
// may only read and write its own database.
const admin = db.getSiblingDB("admin");
admin.createUser({
  user: process.env.MONGO_APP_USER,
  pwd: process.env.MONGO_APP_PASSWORD,
  roles: [{ role: "readWrite", db: process.env.MONGO_APP_DB }],
});
