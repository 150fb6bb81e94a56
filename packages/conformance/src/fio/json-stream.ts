// Splits fio's stdout under --output-format=json --status-interval=N into its
// JSON objects as they arrive.
//
// What fio 3.33 prints (checked against its output): one pretty-printed object
// per status interval and a last one with the final figures, back to back. Each
// object starts with a line "{" and ends with a line "}"; every line inside is
// indented, so a "}" at column 0 closes the object. Engines print lines of their
// own to stdout too (the nbd engine's "fio: connected to NBD server"), between
// objects and possibly inside one; a line inside an object that does not start
// with a space cannot be fio's JSON and is set aside.

import { ConformanceError } from "../errors.js";

/** Largest object held while it is being read; fio's objects with group_reporting are about 8 KiB. */
export const MAX_FIO_OBJECT_BYTES = 4 * 1024 * 1024;
/** Text outside the JSON kept for error messages (the last this many bytes). */
export const MAX_FIO_NOISE_BYTES = 4096;

/** Incremental splitter: `push` stdout chunks, get each complete object's text. */
export class FioJsonSplitter {
  /** The unterminated last line of the input so far. */
  private partial = "";
  /** Lines of the object being read, or null between objects. */
  private lines: string[] | null = null;
  /** Bytes in `lines`, bounded by MAX_FIO_OBJECT_BYTES. */
  private objectBytes = 0;
  /** Tail of the lines that were not JSON. */
  private noiseText = "";

  /** Feeds a chunk; calls `onObject` with the text of each object it completes. */
  push(chunk: string, onObject: (text: string) => void): void {
    const text = this.partial + chunk;
    let start = 0;
    for (let newline = text.indexOf("\n"); newline !== -1; newline = text.indexOf("\n", start)) {
      this.line(text.slice(start, newline), onObject);
      start = newline + 1;
    }
    if (text.length - start > MAX_FIO_OBJECT_BYTES) this.tooLarge();
    this.partial = text.slice(start);
  }

  /** Ends the input: a last line without a newline still counts. */
  end(onObject: (text: string) => void): void {
    if (this.partial !== "") this.line(this.partial, onObject);
    this.partial = "";
  }

  /** Lines printed outside the JSON (the last {@link MAX_FIO_NOISE_BYTES}). */
  noise(): string {
    return this.noiseText;
  }

  private line(raw: string, onObject: (text: string) => void): void {
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    if (this.lines === null) {
      if (line === "{") this.start();
      else this.addNoise(line);
      return;
    }
    if (line === "}") {
      this.lines.push(line);
      const objectText = this.lines.join("\n");
      this.lines = null;
      onObject(objectText);
      return;
    }
    if (!line.startsWith(" ")) {
      this.addNoise(line);
      return;
    }
    this.objectBytes += line.length + 1;
    if (this.objectBytes > MAX_FIO_OBJECT_BYTES) this.tooLarge();
    this.lines.push(line);
  }

  private start(): void {
    this.lines = ["{"];
    this.objectBytes = 2;
  }

  private addNoise(line: string): void {
    if (line === "") return;
    this.noiseText = `${this.noiseText}${line}\n`.slice(-MAX_FIO_NOISE_BYTES);
  }

  private tooLarge(): never {
    throw new ConformanceError({
      code: "TOOL_FAILED",
      message: `fio printed a JSON object or line over ${MAX_FIO_OBJECT_BYTES} bytes; the runner expects group_reporting=1`,
    });
  }
}
