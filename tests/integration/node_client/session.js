// Holds one conversation over ClassifySession (a bidirectional stream) with a gliclass-stream
// server, loading the public .proto at run time as any Node client would, and prints the answers
// as one JSON array on stdout.
//
// usage: node session.js HOST:PORT PATH/TO/protos API_KEY SESSION_ID LABELS_JSON CHUNKS_JSON
"use strict";

const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const [address, protoRoot, key, sessionId, labelsJson, chunksJson] = process.argv.slice(2);
if (!chunksJson) {
  console.error("usage: node session.js HOST:PORT PATH/TO/protos API_KEY SESSION_ID LABELS_JSON CHUNKS_JSON");
  process.exit(2);
}
const labels = JSON.parse(labelsJson);
const chunks = JSON.parse(chunksJson);

const definition = protoLoader.loadSync("gliclass/v1/classifier.proto", {
  includeDirs: [path.resolve(protoRoot)],
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
});
const { Classifier } = grpc.loadPackageDefinition(definition).gliclass.v1;
const client = new Classifier(address, grpc.credentials.createInsecure());
const metadata = new grpc.Metadata();
metadata.set("authorization", `Bearer ${key}`);

const answers = [];
const call = client.ClassifySession(metadata, { deadline: new Date(Date.now() + 120000) });
call.on("data", (response) => {
  answers.push({
    session_id: response.session_id,
    triggered: response.triggered,
    cached_tokens: response.cached_tokens,
    tokens_added: response.tokens_added,
    new_session: response.new_session,
    closed: response.closed,
    scores: response.result ? response.result.scores.map((s) => [s.label, s.score]) : [],
    error: response.error ? response.error.status : null,
  });
});
call.on("error", (err) => {
  console.error(`ClassifySession failed: ${err.code} ${err.details}`);
  process.exit(1);
});
call.on("end", () => {
  console.log(JSON.stringify(answers));
  client.close();
});
// The first message names the labels; later ones reuse the session's. The last one closes it.
chunks.forEach((text, i) => call.write({ session_id: sessionId, text, labels: i === 0 ? labels : [] }));
call.write({ session_id: sessionId, close: true });
call.end();
