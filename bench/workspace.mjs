// How the bench scripts reach the workspace's packages: through their entries and bins only,
// never their dist/ layout.
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(import.meta.url);

/** A workspace package's entry (`@keelson/...`): its dist/ exists only after a build. */
export async function importBuilt(specifier) {
  try {
    return await import(specifier);
  } catch (error) {
    if (error?.code !== "ERR_MODULE_NOT_FOUND") throw error;
    throw new Error(`${specifier} is not built: run npm run build first (${error.message})`, { cause: error });
  }
}

/** A bin of a workspace package, from its package.json (the package's dist/ layout stays its own business). */
export function packageBin(pkg, bin) {
  const manifest = require.resolve(`${pkg}/package.json`);
  return path.join(path.dirname(manifest), JSON.parse(fs.readFileSync(manifest, "utf8")).bin[bin]);
}
