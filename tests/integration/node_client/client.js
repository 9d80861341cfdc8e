// Calls Classify and ClassifyStream on a gliclass-stream server, loading the public .proto at run
// time as any Node client would, and prints what came back as one JSON object on stdout.
//
// usage: node client.js HOST:PORT PATH/TO/protos
"use strict";

const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const [address, protoRoot] = process.argv.slice(2);
if (!address || !protoRoot) {
  console.error("usage: node client.js HOST:PORT PATH/TO/protos");
  process.exit(2);
}

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
const deadline = () => new Date(Date.now() + 60000);

const LABELS = ["billing", "bug report", "feature request"];
const TEXTS = [
  "I was charged twice for my subscription this month",
  "The app crashes every time I open the settings page",
  "Please add a dark mode to the dashboard",
];

function simplify(result) {
  return {
    id: result.id,
    scores: result.scores.map((s) => [s.label, s.score]),
    labels: result.labels,
    error: result.error ? result.error.status : null,
  };
}

function classify() {
  const items = [
    ...TEXTS.map((text, i) => ({ id: `u${i}`, text, labels: LABELS })),
    { id: "set", text: TEXTS[0], label_set: "support", threshold: 0.0 }, // proto3 optional, explicitly 0
  ];
  return new Promise((resolve, reject) => {
    client.Classify({ items }, { deadline: deadline() }, (err, reply) =>
      err ? reject(err) : resolve(reply.results.map(simplify)),
    );
  });
}

function classifyStream() {
  return new Promise((resolve, reject) => {
    const results = [];
    const call = client.ClassifyStream({ deadline: deadline() });
    call.on("data", (response) => results.push(simplify(response.result)));
    call.on("error", reject);
    call.on("end", () => resolve(results));
    TEXTS.forEach((text, i) => call.write({ items: [{ id: `s${i}`, text, labels: LABELS }] }));
    call.write({ items: [{ id: "bad", text: "no labels here" }] });
    call.write({ items: [{ id: "last", text: TEXTS[2], labels: LABELS }] });
    call.end();
  });
}

function unaryError() {
  return new Promise((resolve) => {
    client.Classify({ items: [{ id: "x", text: "", labels: LABELS }] }, { deadline: deadline() }, (err) =>
      resolve(err ? { code: grpc.status[err.code], details: err.details } : null),
    );
  });
}

(async () => {
  try {
    const out = { classify: await classify(), stream: await classifyStream(), error: await unaryError() };
    process.stdout.write(JSON.stringify(out) + "\n");
    client.close();
  } catch (err) {
    console.error(`gRPC call failed: ${err.code} ${err.details || err.message}`);
    process.exit(1);
  }
})();
