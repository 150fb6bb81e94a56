/**
 * Byte-level mutations of the kinds libFuzzer and AFL use: bit flips, random
 * bytes, inserts, deletes, copies, splices with another corpus input,
 * "interesting" integers, dictionary tokens, and length fields made to match
 * what follows them (NBD options and requests carry a length before data).
 * Everything draws from the one seeded `random`, so a run replays from its seed.
 */

/** Integers that sit on the edges parsers get wrong: zero, signs, powers of two, and the NBD limits. */
const INTERESTING = [
  0,
  1,
  2,
  4,
  7,
  8,
  16,
  28,
  32,
  64,
  100,
  127,
  128,
  255,
  256,
  512,
  1000,
  1024,
  4095,
  4096,
  4097,
  0x7fff,
  0x8000,
  0xffff,
  0x10000,
  16 * 1024,
  16 * 1024 + 1,
  128 * 1024,
  128 * 1024 + 1,
  1024 * 1024,
  1024 * 1024 + 1,
  32 * 1024 * 1024,
  32 * 1024 * 1024 + 1,
  0x7fffffff,
  0x80000000,
  0xfffffffe,
  0xffffffff,
];

export type Random = () => number;

function below(random: Random, n: number): number {
  return Math.floor(random() * n);
}

function pick<T>(random: Random, items: readonly T[]): T {
  return items[below(random, items.length)] as T;
}

/** Options of {@link mutate}. */
export interface MutateOptions {
  random: Random;
  /** Longest input produced. */
  maxLen: number;
  /** Tokens of the format (magic numbers, option codes); may be empty. */
  dictionary: readonly Buffer[];
  /** Other corpus inputs, for splicing. */
  corpus: readonly Buffer[];
}

function writeInt(out: Buffer, at: number, value: number, width: 1 | 2 | 4 | 8, littleEndian: boolean): void {
  const v = BigInt(value) & ((1n << BigInt(width * 8)) - 1n);
  for (let i = 0; i < width && at + i < out.length; i++) {
    const shift = BigInt(littleEndian ? i : width - 1 - i) * 8n;
    out[at + i] = Number((v >> shift) & 0xffn);
  }
}

function insert(input: Buffer, at: number, bytes: Buffer): Buffer {
  return Buffer.concat([input.subarray(0, at), bytes, input.subarray(at)]);
}

type Mutation = (input: Buffer, o: MutateOptions) => Buffer;

const MUTATIONS: readonly Mutation[] = [
  // Flip one bit.
  (input, { random }) => {
    if (input.length === 0) return input;
    const out = Buffer.from(input);
    const at = below(random, out.length);
    out[at] = (out[at] as number) ^ (1 << below(random, 8));
    return out;
  },
  // Set one byte at random.
  (input, { random }) => {
    if (input.length === 0) return Buffer.from([below(random, 256)]);
    const out = Buffer.from(input);
    out[below(random, out.length)] = below(random, 256);
    return out;
  },
  // Add or subtract a little from one byte.
  (input, { random }) => {
    if (input.length === 0) return input;
    const out = Buffer.from(input);
    const at = below(random, out.length);
    out[at] = ((out[at] as number) + below(random, 35) - 17) & 0xff;
    return out;
  },
  // Insert a few random bytes.
  (input, { random }) => {
    const bytes = Buffer.alloc(1 + below(random, 16));
    for (let i = 0; i < bytes.length; i++) bytes[i] = below(random, 256);
    return insert(input, below(random, input.length + 1), bytes);
  },
  // Delete a range.
  (input, { random }) => {
    if (input.length < 2) return input;
    const at = below(random, input.length);
    const n = 1 + below(random, Math.min(64, input.length - at));
    return Buffer.concat([input.subarray(0, at), input.subarray(at + n)]);
  },
  // Duplicate a range in place (repeated options and requests).
  (input, { random }) => {
    if (input.length === 0) return input;
    const at = below(random, input.length);
    const n = 1 + below(random, Math.min(128, input.length - at));
    return insert(input, at, input.subarray(at, at + n));
  },
  // Overwrite with an interesting integer, big- or little-endian, of 1, 2, 4 or 8 bytes.
  (input, { random }) => {
    if (input.length === 0) return input;
    const out = Buffer.from(input);
    writeInt(out, below(random, out.length), pick(random, INTERESTING), pick(random, [1, 2, 4, 8] as const), random() < 0.2);
    return out;
  },
  // Make a big-endian u32 the count of the bytes after it (a length field that fits).
  (input, { random }) => {
    if (input.length < 4) return input;
    const out = Buffer.from(input);
    const at = below(random, out.length - 3);
    const rest = out.length - at - 4;
    out.writeUInt32BE(Math.min(rest, below(random, rest + 1) + (random() < 0.5 ? rest : 0)), at);
    return out;
  },
  // A small number into a big-endian u16 or u32 (codes, counts and short lengths of binary protocols).
  (input, { random }) => {
    if (input.length < 2) return input;
    const out = Buffer.from(input);
    const width = out.length >= 4 && random() < 0.5 ? 4 : 2;
    writeInt(out, below(random, out.length - width + 1), below(random, 33), width, false);
    return out;
  },
  // Insert or overwrite with a dictionary token.
  (input, { random, dictionary }) => {
    if (dictionary.length === 0) return input;
    const token = pick(random, dictionary);
    const at = below(random, input.length + 1);
    if (random() < 0.5) return insert(input, at, token);
    const out = Buffer.from(input);
    token.copy(out, at);
    return out;
  },
  // Splice: the head of this input with the tail of another.
  (input, { random, corpus }) => {
    if (corpus.length === 0) return input;
    const other = pick(random, corpus);
    return Buffer.concat([input.subarray(0, below(random, input.length + 1)), other.subarray(below(random, other.length + 1))]);
  },
];

/** Up to eight stacked mutations of `input` (one half of the time, two a quarter, ...), cut to `maxLen`. */
export function mutate(input: Buffer, options: MutateOptions): Buffer {
  let out = input;
  let n = 1;
  while (n < 8 && options.random() < 0.5) n++;
  for (let i = 0; i < n; i++) out = pick(options.random, MUTATIONS)(out, options);
  return out.length > options.maxLen ? out.subarray(0, options.maxLen) : out;
}

/** A random input of up to `maxLen` bytes (the baseline the corpus is compared against). */
export function randomInput(random: Random, maxLen: number): Buffer {
  const out = Buffer.alloc(below(random, maxLen + 1));
  for (let i = 0; i < out.length; i++) out[i] = below(random, 256);
  return out;
}
