#!/usr/bin/env node
// The `keelson-conformance` binary: thin; everything is in cli/main.ts.
import { main } from "./cli/main.js";

process.exitCode = await main(process.argv.slice(2));
