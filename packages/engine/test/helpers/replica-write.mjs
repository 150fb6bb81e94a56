// Writes to a replica as an engine would, from wherever it runs (a test runs
// it inside a node's network namespace, so the replica sees that node).
// Usage: node replica-write.mjs ADDRESS EXPORT OFFSET DATA_FILE
import fs from "node:fs";
import { ReplicaClient } from "../../dist/replication/replica-client.js";

const [address, exportName, offset, dataFile] = process.argv.slice(2);
const client = await ReplicaClient.connect(address, exportName, 5_000);
try {
  await client.write(Number(offset), fs.readFileSync(dataFile), false);
  await client.flush();
} finally {
  client.close();
}
